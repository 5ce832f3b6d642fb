//! Typed errors: every failure of `Bundle::open` and `Model::project` is one of these, never a panic.
//!
//! Causes are chained with `#[source]`, so `std::error::Error::source` walks down to the io, JSON or
//! onnxruntime error underneath.  The enum is `#[non_exhaustive]`: match the variants you handle and
//! keep a `_` arm.  [`Error::exit_code`] maps each variant onto h2l's documented exit codes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot load onnxruntime from {path}: {reason} (set ORT_DYLIB_PATH to libonnxruntime.so.1.x)")]
    Library {
        path: String,
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest.json is invalid: {detail} (re-export the bundle with `h2l export`)")]
    Manifest {
        detail: String,
        #[source]
        source: Option<serde_json::Error>,
    },
    #[error("manifest.json has schema_version {found}; this runtime reads {expected} (re-export or upgrade)")]
    SchemaVersion { found: u64, expected: u64 },
    #[error("{what} is {size} bytes, over this runtime's cap of {limit} bytes (hostile or corrupt bundle)")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("manifest names file {0:?}, which is not a plain relative path inside the bundle (tampered manifest)")]
    UnsafePath(String),
    #[error("bundle file {0} is a symbolic link; bundles hold plain files only (tampered bundle; re-export it)")]
    Symlink(String),
    #[error("bundle file {path} is missing (re-export the bundle)")]
    Missing {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle file {0} fails its sha256 check (modified or corrupt; re-export the bundle)")]
    Checksum(String),
    #[error("{model}: {file} is not a readable ONNX model: {detail} (truncated or corrupt; re-export the bundle)")]
    Onnx { model: String, file: String, detail: String },
    #[error("{model}: tensor {tensor:?} keeps its data outside the model file (at {location:?}); h2l bundles never use external data, so this runtime refuses to read it")]
    ExternalData { model: String, tensor: String, location: String },
    #[error("{model}: session I/O disagrees with the manifest: {detail}")]
    Contract { model: String, detail: String },
    #[error("bundle has no manifest.sig but a public key is configured (sign it with `h2l sign DIR --key KEY`)")]
    SignatureMissing,
    #[error("manifest.sig is signed by key {found}, not the configured key {expected} (bundle from another publisher)")]
    SignatureWrongKey { expected: String, found: String },
    #[error("manifest.sig does not verify against manifest.json (manifest changed after signing; re-sign or re-export)")]
    SignatureInvalid,
    #[error("manifest.sig is malformed: {0} (re-sign with `h2l sign DIR --key KEY`)")]
    SignatureMalformed(String),
    #[error("cannot use public key {path}: {reason} (expected a PEM \"PUBLIC KEY\" ed25519 file from `h2l keygen`)")]
    PublicKey { path: String, reason: String },
    #[error("bundle file {file} is invalid: {detail} (re-export the bundle)")]
    Data { file: String, detail: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("bundle has no {0}: it takes query embeddings, not text (re-export it with `h2l export --with-encoder`)")]
    NoEncoder(&'static str),
    #[error("{path}: {reason}")]
    Npy { path: String, reason: String },
    #[error("bad input: {0}")]
    Input(String),
    #[error("onnxruntime: {context}: {source}")]
    Runtime {
        context: String,
        #[source]
        source: ort::Error,
    },
    #[error("{0} lock poisoned (a thread panicked while holding it)")]
    Poisoned(&'static str),
    #[error("{model}: onnxruntime returned no {output} output")]
    MissingOutput { model: String, output: String },
}

impl Error {
    pub(crate) fn manifest(detail: impl Into<String>) -> Self {
        Error::Manifest { detail: detail.into(), source: None }
    }

    pub(crate) fn ort(context: impl Into<String>) -> impl FnOnce(ort::Error) -> Error {
        let context = context.into();
        move |source| Error::Runtime { context, source }
    }

    /// h2l's documented exit codes: input 3, integrity 5, provider 7, missing dependency 8.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Library { .. } => 8,
            Error::Io { .. } | Error::Input(_) | Error::Npy { .. } | Error::PublicKey { .. } | Error::NoEncoder(_) => 3,
            Error::Runtime { .. } | Error::Poisoned(_) | Error::MissingOutput { .. } => 7,
            _ => 5,
        }
    }
}

impl From<ort::Error<ort::session::builder::SessionBuilder>> for Error {
    fn from(e: ort::Error<ort::session::builder::SessionBuilder>) -> Self {
        Error::Runtime { context: "session options".into(), source: e.into() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
