//! Typed errors: every failure of `Bundle::open` and `Model::project` is one of these, never a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load onnxruntime from {path}: {reason} (set ORT_DYLIB_PATH to libonnxruntime.so.1.x)")]
    Library { path: String, reason: String },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("manifest.json is invalid: {0} (re-export the bundle with `h2l export`)")]
    Manifest(String),
    #[error("manifest.json has schema_version {found}; this runtime reads {expected} (re-export or upgrade)")]
    SchemaVersion { found: u64, expected: u64 },
    #[error("manifest names file {0:?}, which is not a plain relative path inside the bundle (tampered manifest)")]
    UnsafePath(String),
    #[error("bundle file {0} is missing (re-export the bundle)")]
    Missing(String),
    #[error("bundle file {0} fails its sha256 check (modified or corrupt; re-export the bundle)")]
    Checksum(String),
    #[error("{model}: session I/O disagrees with the manifest: {detail}")]
    Contract { model: String, detail: String },
    #[error("bad input: {0}")]
    Input(String),
    #[error("onnxruntime: {0}")]
    Runtime(String),
}

impl<R> From<ort::Error<R>> for Error {
    fn from(e: ort::Error<R>) -> Self {
        Error::Runtime(e.message().to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
