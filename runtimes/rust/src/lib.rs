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
//! onnxruntime is loaded at run time from `ORT_DYLIB_PATH` (or [`Bundle::open_with_library`]).
//! Thread safety: `Bundle` is `Send + Sync`; each model's session sits behind a `Mutex`
//! (ort's `Session::run` takes `&mut self`), so concurrent `project` calls on one model
//! serialise.  For parallel throughput open one `Bundle` per worker thread.

pub mod error;
pub mod manifest;
pub mod npy;

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use sha2::{Digest, Sha256};

pub use error::{Error, Result};
pub use manifest::{Dim, Manifest, TensorSpec};

static ENV: OnceLock<Environment> = OnceLock::new();
static ENV_INIT: Mutex<()> = Mutex::new(());

/// Load onnxruntime once per process from `lib` or `ORT_DYLIB_PATH`.
fn environment(lib: Option<&Path>) -> Result<&'static Environment> {
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let _guard = ENV_INIT.lock().map_err(|_| Error::Runtime("environment lock poisoned".into()))?;
    if let Some(env) = ENV.get() {
        return Ok(env);
    }
    let path: PathBuf = match lib {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .ok_or_else(|| Error::Library { path: "<unset>".into(), reason: "ORT_DYLIB_PATH is not set".into() })?,
    };
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(Error::Library { path: shown, reason: "no such file".into() });
    }
    let builder = ort::init_from(&path).map_err(|e| Error::Library { path: shown.clone(), reason: e.to_string() })?;
    let env = builder
        .with_name("h2l")
        .with_telemetry(false)
        .build()
        .map_err(|e| Error::Library { path: shown, reason: e.to_string() })?;
    Ok(ENV.get_or_init(|| env))
}

/// One model of the bundle (teacher or student) with its checked session.
pub struct Model {
    pub name: String,
    dim: usize,
    input: String,
    outputs: Vec<String>,
    session: Mutex<Session>,
}

/// The result of projecting a batch: row-major `[batch, dim]` (and `[batch, n_heads]` for the teacher).
#[derive(Debug, Clone)]
pub struct Projection {
    pub batch: usize,
    pub projected: Vec<f32>,
    pub routing_weights: Option<Vec<f32>>,
}

impl Model {
    /// Project one query (`dim` floats) or a batch (`batch * dim` floats, row-major).
    pub fn project(&self, queries: &[f32]) -> Result<Projection> {
        if queries.is_empty() || queries.len() % self.dim != 0 {
            return Err(Error::Input(format!(
                "{} floats is not a whole number of {}-dimensional queries",
                queries.len(),
                self.dim
            )));
        }
        if let Some(i) = queries.iter().position(|x| !x.is_finite()) {
            return Err(Error::Input(format!("query {} contains NaN or Inf", i / self.dim)));
        }
        let batch = queries.len() / self.dim;
        let tensor = Tensor::<f32>::from_array(([batch, self.dim], queries.to_vec()))?;
        let mut session = self.session.lock().map_err(|_| Error::Runtime("session lock poisoned".into()))?;
        let outputs = session.run(ort::inputs![self.input.as_str() => tensor])?;
        let take = |name: &str| -> Result<Vec<f32>> {
            let value = outputs.get(name).ok_or_else(|| Error::Runtime(format!("output {name} missing")))?;
            let (_, data) = value.try_extract_tensor::<f32>()?;
            Ok(data.to_vec())
        };
        let projected = take("projected_embedding")?;
        let routing_weights = if self.outputs.iter().any(|o| o == "routing_weights") {
            Some(take("routing_weights")?)
        } else {
            None
        };
        Ok(Projection { batch, projected, routing_weights })
    }

    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }
}

/// An opened bundle: manifest read, every file's sha256 checked, sessions opened and contract-checked.
pub struct Bundle {
    pub root: PathBuf,
    pub manifest: Manifest,
    teacher: Model,
    student: Option<Model>,
}

impl Bundle {
    /// Open `dir`, loading onnxruntime from `ORT_DYLIB_PATH`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Bundle> {
        Self::open_inner(dir.as_ref(), None)
    }

    /// Open `dir`, loading onnxruntime from `library` (first call per process wins).
    pub fn open_with_library(dir: impl AsRef<Path>, library: impl AsRef<Path>) -> Result<Bundle> {
        Self::open_inner(dir.as_ref(), Some(library.as_ref()))
    }

    fn open_inner(dir: &Path, lib: Option<&Path>) -> Result<Bundle> {
        let manifest = read_manifest(dir)?;
        check_files(dir, &manifest)?;
        let env = environment(lib)?;
        let open = |name: &str| -> Result<Option<Model>> {
            match manifest.models.get(name) {
                None => Ok(None),
                Some(entry) => open_model(env, dir, name, entry, manifest.teacher.dim).map(Some),
            }
        };
        let teacher = open("teacher")?.ok_or_else(|| Error::Manifest("no teacher model".into()))?;
        let student = open("student")?;
        Ok(Bundle { root: dir.to_path_buf(), manifest, teacher, student })
    }

    pub fn dim(&self) -> usize {
        self.manifest.teacher.dim
    }
    pub fn teacher(&self) -> &Model {
        &self.teacher
    }
    pub fn student(&self) -> Option<&Model> {
        self.student.as_ref()
    }
    pub fn model(&self, name: &str) -> Option<&Model> {
        match name {
            "teacher" => Some(&self.teacher),
            "student" => self.student.as_ref(),
            _ => None,
        }
    }
    /// A manifest path resolved safely inside the bundle.
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        safe_path(&self.root, rel)
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Manifest(e.to_string()))?;
    let found = raw.get("schema_version").and_then(|v| v.as_u64()).unwrap_or(0);
    if found != manifest::SCHEMA_VERSION {
        return Err(Error::SchemaVersion { found, expected: manifest::SCHEMA_VERSION });
    }
    serde_json::from_value(raw).map_err(|e| Error::Manifest(e.to_string()))
}

/// Refuse absolute paths, `..`, and symlinks that leave the bundle.
pub fn safe_path(root: &Path, rel: &str) -> Result<PathBuf> {
    // One rule in Python, Rust and Go: '/'-separated parts, none empty, "." or ".."; no '\\'; not absolute.
    let plain = !rel.starts_with('/') && !rel.contains('\\') && rel.split('/').all(|part| !matches!(part, "" | "." | ".."));
    let p = Path::new(rel);
    if !plain || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::UnsafePath(rel.to_string()));
    }
    let full = root.join(p);
    if let (Ok(real), Ok(real_root)) = (full.canonicalize(), root.canonicalize()) {
        if !real.starts_with(&real_root) {
            return Err(Error::UnsafePath(rel.to_string()));
        }
    }
    Ok(full)
}

fn check_files(dir: &Path, m: &Manifest) -> Result<()> {
    let mut listed = HashSet::new();
    for entry in &m.files {
        let path = safe_path(dir, &entry.path)?;
        let bytes = std::fs::read(&path).map_err(|_| Error::Missing(entry.path.clone()))?;
        let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        if bytes.len() as u64 != entry.bytes || digest != entry.sha256 {
            return Err(Error::Checksum(entry.path.clone()));
        }
        listed.insert(entry.path.as_str());
    }
    let referenced = m.models.values().map(|e| e.file.as_str()).chain(std::iter::once(m.golden.inputs.as_str()));
    for rel in referenced.chain(m.golden.outputs.values().flat_map(|o| o.values().map(String::as_str))) {
        if !listed.contains(rel) {
            return Err(Error::Manifest(format!("{rel} is referenced but has no sha256 entry")));
        }
    }
    Ok(())
}

fn spec_of(name: &str, v: &ValueType) -> TensorSpec {
    match v {
        ValueType::Tensor { ty, shape, dimension_symbols } => TensorSpec {
            name: name.to_string(),
            dtype: if *ty == TensorElementType::Float32 { "float32".into() } else { format!("{ty:?}") },
            shape: shape
                .iter()
                .zip(dimension_symbols.iter())
                .map(|(d, s)| if *d < 0 { Dim::Symbolic(s.clone()) } else { Dim::Fixed(*d) })
                .collect(),
        },
        other => TensorSpec { name: name.to_string(), dtype: format!("{other:?}"), shape: vec![] },
    }
}

fn open_model(env: &Environment, dir: &Path, name: &str, entry: &manifest::ModelEntry, dim: usize) -> Result<Model> {
    let path = safe_path(dir, &entry.file)?;
    let session = Session::builder(env)?
        .with_intra_threads(1)?
        .with_inter_threads(1)?
        .commit_from_file(&path)
        .map_err(|e| Error::Runtime(format!("{}: {e}", entry.file)))?;
    let inputs: Vec<TensorSpec> = session.inputs().iter().map(|o| spec_of(o.name(), o.dtype())).collect();
    let outputs: Vec<TensorSpec> = session.outputs().iter().map(|o| spec_of(o.name(), o.dtype())).collect();
    for (side, got, want) in [("inputs", &inputs, &entry.inputs), ("outputs", &outputs, &entry.outputs)] {
        if got != want {
            return Err(Error::Contract { model: name.into(), detail: format!("{side}: session {got:?} != manifest {want:?}") });
        }
    }
    let contract = |detail: String| Error::Contract { model: name.into(), detail };
    if inputs.len() != 1 || !outputs.iter().any(|o| o.name == "projected_embedding") {
        return Err(contract("expected one input and a projected_embedding output".into()));
    }
    if dim == 0 || inputs[0].shape.last() != Some(&Dim::Fixed(dim as i64)) {
        return Err(contract(format!("input shape {:?} does not end in the manifest's d = {dim}", inputs[0].shape)));
    }
    Ok(Model {
        name: name.to_string(),
        dim,
        input: inputs[0].name.clone(),
        outputs: outputs.iter().map(|o| o.name.clone()).collect(),
        session: Mutex::new(session),
    })
}
