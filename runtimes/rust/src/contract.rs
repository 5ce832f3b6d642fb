//! onnxruntime and the I/O contract: load the library once per process, build sessions from
//! verified bytes (after the protobuf walk), and check each session's inputs and outputs against
//! the manifest.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use crate::error::{Error, Result};
use crate::manifest::{self, Dim, TensorSpec};
use crate::onnx;

static ENV: OnceLock<Environment> = OnceLock::new();
static ENV_INIT: Mutex<()> = Mutex::new(());

/// Load onnxruntime once per process from `lib` or `ORT_DYLIB_PATH`.
pub(crate) fn environment(lib: Option<&Path>) -> Result<&'static Environment> {
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let _guard = ENV_INIT.lock().map_err(|_| Error::Poisoned("environment"))?;
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let path: PathBuf = match lib {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).ok_or_else(|| Error::Library {
            path: "<unset>".into(),
            reason: "ORT_DYLIB_PATH is not set".into(),
            source: None,
        })?,
    };
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(Error::Library { path: shown, reason: "no such file".into(), source: None });
    }
    let builder = ort::init_from(&path)
        .map_err(|e| Error::Library { path: shown.clone(), reason: "cannot load the library".into(), source: Some(Box::new(e)) })?;
    let env = builder
        .with_name("h2l")
        .with_telemetry(false)
        .build()
        .map_err(|e| Error::Library { path: shown, reason: "cannot create the environment".into(), source: Some(Box::new(e)) })?;
    Ok(ENV.get_or_init(|| env))
}

fn spec_of(name: &str, v: &ValueType) -> TensorSpec {
    match v {
        ValueType::Tensor { ty, shape, dimension_symbols } => TensorSpec {
            name: name.to_string(),
            dtype: match ty {
                TensorElementType::Float32 => "float32".into(),
                TensorElementType::Int64 => "int64".into(),
                other => format!("{other:?}"),
            },
            shape: shape
                .iter()
                .zip(dimension_symbols.iter())
                .map(|(d, s)| if *d < 0 { Dim::Symbolic(s.clone()) } else { Dim::Fixed(*d) })
                .collect(),
        },
        other => TensorSpec { name: name.to_string(), dtype: format!("{other:?}"), shape: vec![] },
    }
}

/// Build a session from verified bytes, after the protobuf walk, and check its I/O against the manifest.
pub(crate) fn session_from_bytes(env: &Environment, name: &str, file: &str, bytes: &[u8]) -> Result<Session> {
    onnx::check_model(bytes).map_err(|p| match p {
        onnx::Problem::External { tensor, location } => Error::ExternalData { model: name.into(), tensor, location },
        onnx::Problem::Malformed(detail) => Error::Onnx { model: name.into(), file: file.into(), detail },
    })?;
    Session::builder(env)
        .map_err(Error::ort("session builder"))?
        .with_intra_threads(1)?
        .with_inter_threads(1)?
        .commit_from_memory(bytes)
        .map_err(|e| Error::Onnx { model: name.into(), file: file.into(), detail: e.to_string() })
}

pub(crate) fn check_contract(session: &Session, name: &str, entry: &manifest::ModelEntry) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>)> {
    let inputs: Vec<TensorSpec> = session.inputs().iter().map(|o| spec_of(o.name(), o.dtype())).collect();
    let outputs: Vec<TensorSpec> = session.outputs().iter().map(|o| spec_of(o.name(), o.dtype())).collect();
    for (side, got, want) in [("inputs", &inputs, &entry.inputs), ("outputs", &outputs, &entry.outputs)] {
        if got != want {
            return Err(Error::Contract { model: name.into(), detail: format!("{side}: session {got:?} != manifest {want:?}") });
        }
    }
    Ok((inputs, outputs))
}
