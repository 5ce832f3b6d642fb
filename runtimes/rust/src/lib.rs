//! h2l-runtime: open an h2l artifact bundle and project query embeddings with onnxruntime.
//!
//! ```no_run
//! let bundle = h2l_runtime::Bundle::open("artifacts/demo/bundle")?;   // manifest, sha256, I/O contract
//! let q = vec![0.0f32; bundle.dim()];                                   // one query embedding
//! let out = bundle.student().unwrap_or(bundle.teacher()).project(&q)?;
//! println!("{:?}", &out.projected[..4]);
//! # Ok::<(), h2l_runtime::Error>(())
//! ```
//!
//! Opening reads the folder through one directory handle ([`folder`]): the manifest (size-capped,
//! and with a pinned key its signature checked first, [`Bundle::open_verified`]), then each listed
//! file streamed through sha256; sessions are built from those verified bytes
//! (`commit_from_memory`), after a protobuf walk refuses external data ([`onnx`]).  Nothing is
//! reopened by path after it was hashed.
//!
//! onnxruntime is loaded at run time from `ORT_DYLIB_PATH` (or [`OpenOptions::library`]).
//! Thread safety: `Bundle` is `Send + Sync`; each model's session sits behind a `Mutex`
//! (ort's `Session::run` takes `&mut self`), so concurrent `project` calls on one model
//! serialise.  For parallel throughput open one `Bundle` per worker thread.  For a service whose
//! bundle is republished while it runs, see [`reload::Reloader`].

pub mod error;
pub mod folder;
pub mod manifest;
pub mod npy;
pub mod onnx;
pub mod reload;
pub mod signature;
pub mod text;

mod ask;
mod bundle;
mod contract;
mod model;

pub use error::{Error, Result};
pub use folder::safe_path;
pub use manifest::{Dim, Manifest, TensorSpec};
pub use reload::Reloader;
pub use signature::PublicKey;

pub use ask::Answer;
pub use bundle::{Bundle, OpenOptions};
pub use model::{BoundKind, BoundedProjection, Model, Projection, Routed, RoutedInfo, Source};
