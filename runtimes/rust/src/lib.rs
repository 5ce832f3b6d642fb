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

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use sha2::{Digest, Sha256};

pub use error::{Error, Result};
pub use folder::safe_path;
pub use manifest::{Dim, Manifest, TensorSpec};
pub use reload::Reloader;
pub use signature::PublicKey;

use folder::{hex, Folder};

static ENV: OnceLock<Environment> = OnceLock::new();
static ENV_INIT: Mutex<()> = Mutex::new(());

/// Load onnxruntime once per process from `lib` or `ORT_DYLIB_PATH`.
fn environment(lib: Option<&Path>) -> Result<&'static Environment> {
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

/// One model of the bundle (teacher, student or routed teacher) with its checked session.
pub struct Model {
    pub name: String,
    dim: usize,
    input: String,
    outputs: Vec<String>,
    routed: Option<RoutedInfo>,
    session: Mutex<Session>,
}

/// Whether a routed teacher's neglected mass is a proven bound (`screen`) or an estimate (`ivf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundKind {
    Proven,
    Estimate,
}

/// What the manifest says about a routed teacher (`models.routed`).
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedInfo {
    /// "screen" or "ivf".
    pub router: String,
    /// K: heads scored exactly per query.
    pub candidates: usize,
    pub bound: BoundKind,
    /// `neglected_mass_bound` (proven) or `neglected_mass_estimate`.
    pub mass_output: String,
}

/// The routed teacher's extra outputs for a batch.
#[derive(Debug, Clone)]
pub struct Routed {
    /// K per row.
    pub k: usize,
    /// `[batch, K]`: the heads scored exactly.
    pub top_heads: Vec<i64>,
    /// `[batch, K]`: their weights.
    pub top_weights: Vec<f32>,
    /// `[batch]`: the flat teacher's softmax mass outside `top_heads` (a proven upper bound when
    /// `bound` is `Proven`).  ‖routed − flat‖ ≤ 2 · mass · max‖a‖.
    pub neglected_mass: Vec<f32>,
    pub bound: BoundKind,
}

/// The result of projecting a batch: row-major `[batch, dim]` (and `[batch, n_heads]` for the flat
/// teacher's routing weights, the routed outputs for the routed teacher).
#[derive(Debug, Clone)]
pub struct Projection {
    pub batch: usize,
    pub projected: Vec<f32>,
    pub routing_weights: Option<Vec<f32>>,
    pub routed: Option<Routed>,
}

/// Which model answered a row of [`Bundle::project_within`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Routed,
    Flat,
}

/// [`Bundle::project_within`]'s answer: per row, the projection and who made it.
#[derive(Debug, Clone)]
pub struct BoundedProjection {
    pub batch: usize,
    pub projected: Vec<f32>,
    pub source: Vec<Source>,
    /// The routed teacher's neglected mass per row (also for rows the flat teacher then answered).
    pub neglected_mass: Vec<f32>,
}

impl Model {
    /// Project one query (`dim` floats) or a batch (`batch * dim` floats, row-major).
    pub fn project(&self, queries: &[f32]) -> Result<Projection> {
        if queries.is_empty() || !queries.len().is_multiple_of(self.dim) {
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
        let tensor = Tensor::<f32>::from_array(([batch, self.dim], queries.to_vec())).map_err(Error::ort("input tensor"))?;
        let mut session = self.session.lock().map_err(|_| Error::Poisoned("session"))?;
        let outputs = session.run(ort::inputs![self.input.as_str() => tensor]).map_err(Error::ort(format!("{} run", self.name)))?;
        let take = |name: &str| -> Result<Vec<f32>> {
            let value = outputs
                .get(name)
                .ok_or_else(|| Error::MissingOutput { model: self.name.clone(), output: name.into() })?;
            let (_, data) = value.try_extract_tensor::<f32>().map_err(Error::ort(format!("{}.{name}", self.name)))?;
            Ok(data.to_vec())
        };
        let projected = take("projected_embedding")?;
        let routing_weights = if self.outputs.iter().any(|o| o == "routing_weights") {
            Some(take("routing_weights")?)
        } else {
            None
        };
        let routed = match &self.routed {
            None => None,
            Some(info) => {
                let heads = outputs
                    .get("top_heads")
                    .ok_or_else(|| Error::MissingOutput { model: self.name.clone(), output: "top_heads".into() })?;
                let (_, heads) = heads.try_extract_tensor::<i64>().map_err(Error::ort(format!("{}.top_heads", self.name)))?;
                Some(Routed {
                    k: info.candidates,
                    top_heads: heads.to_vec(),
                    top_weights: take("top_weights")?,
                    neglected_mass: take(&info.mass_output)?,
                    bound: info.bound,
                })
            }
        };
        Ok(Projection { batch, projected, routing_weights, routed })
    }

    /// For a routed teacher: its router, K and whether its mass is a proven bound.
    pub fn routed_info(&self) -> Option<&RoutedInfo> {
        self.routed.as_ref()
    }

    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// How to open a bundle: which onnxruntime library, and which publisher key to require.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    library: Option<PathBuf>,
    public_key: Option<PublicKey>,
}

impl OpenOptions {
    pub fn new() -> Self {
        Self::default()
    }
    /// Load onnxruntime from `path` instead of `ORT_DYLIB_PATH` (the first load per process wins).
    pub fn library(mut self, path: impl AsRef<Path>) -> Self {
        self.library = Some(path.as_ref().to_path_buf());
        self
    }
    /// Require manifest.sig by this key; there is no unsigned fallback.
    pub fn public_key(mut self, key: PublicKey) -> Self {
        self.public_key = Some(key);
        self
    }
    pub fn key(&self) -> Option<&PublicKey> {
        self.public_key.as_ref()
    }
    pub fn open(&self, dir: impl AsRef<Path>) -> Result<Bundle> {
        Bundle::open_inner(dir.as_ref(), self)
    }
}

/// An opened bundle: manifest read, every file's sha256 checked, sessions opened and contract-checked.
pub struct Bundle {
    pub root: PathBuf,
    pub manifest: Manifest,
    manifest_sha256: String,
    signed_by: Option<String>,
    teacher: Model,
    student: Option<Model>,
    routed: Option<Model>,
    encoder: Option<text::Encoder>,
    /// answers.jsonl in head order, when the bundle has one.
    answers: Option<Vec<String>>,
    /// The teacher's answer embeddings [N, d] (initializer `answers` of teacher.onnx): the student's
    /// top cluster is the one nearest its projection.
    answer_embeddings: Option<Vec<f32>>,
    /// Verified bytes of the non-model files the manifest references (golden data, tokenizer, answers).
    data: BTreeMap<String, Arc<[u8]>>,
}

impl Bundle {
    /// Open `dir`, loading onnxruntime from `ORT_DYLIB_PATH`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Bundle> {
        OpenOptions::new().open(dir)
    }

    /// Open `dir`, loading onnxruntime from `library` (first call per process wins).
    pub fn open_with_library(dir: impl AsRef<Path>, library: impl AsRef<Path>) -> Result<Bundle> {
        OpenOptions::new().library(library).open(dir)
    }

    /// Open `dir` only if manifest.sig is a valid signature by `key` over the exact manifest bytes.
    /// The signature is checked before anything in the manifest is used.
    pub fn open_verified(dir: impl AsRef<Path>, key: &PublicKey) -> Result<Bundle> {
        OpenOptions::new().public_key(key.clone()).open(dir)
    }

    fn open_inner(dir: &Path, opts: &OpenOptions) -> Result<Bundle> {
        let folder = Folder::open(dir)?;
        let bytes = folder.read_capped("manifest.json", manifest::MAX_MANIFEST_BYTES)?;
        let signed_by = match &opts.public_key {
            None => None,
            Some(key) => {
                let sig = match folder.read_capped(signature::SIGNATURE_FILE, signature::MAX_SIGNATURE_BYTES) {
                    Err(Error::Missing { .. }) => return Err(Error::SignatureMissing),
                    other => other?,
                };
                key.verify(&bytes, &sig)?;
                Some(key.key_id().to_string())
            }
        };
        let manifest = manifest::parse(&bytes)?;
        let manifest_sha256 = hex(&Sha256::digest(&bytes));
        drop(bytes);

        let paths = manifest.files.iter().map(|f| f.path.as_str()).chain(manifest.referenced());
        if let Some(bad) = paths.into_iter().find(|p| !folder::is_plain(p)) {
            return Err(Error::UnsafePath(bad.to_string()));
        }
        let referenced: HashSet<&str> = manifest.referenced().into_iter().collect();
        let listed: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        if let Some(rel) = manifest.referenced().into_iter().find(|r| !listed.contains(r)) {
            return Err(Error::manifest(format!("{rel} is referenced but has no sha256 entry")));
        }
        let models: HashSet<&str> = ["teacher", "student", "routed", "encoder"]
            .iter()
            .filter_map(|n| manifest.models.get(*n).map(|e| e.file.as_str()))
            .collect();
        // Every listed file is streamed through sha256; model bytes go to sessions, referenced data is kept.
        let mut model_bytes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut data: BTreeMap<String, Arc<[u8]>> = BTreeMap::new();
        for entry in &manifest.files {
            let keep = referenced.contains(entry.path.as_str());
            let got = folder.read_verified(&entry.path, entry.bytes, &entry.sha256, keep)?;
            if models.contains(entry.path.as_str()) {
                model_bytes.insert(entry.path.clone(), got);
            } else if keep {
                data.insert(entry.path.clone(), Arc::from(got));
            }
        }
        let answers = match &manifest.answers {
            None => None,
            Some(info) => Some(read_answers(&manifest, info, data.get(&info.file).map(|b| &b[..]).unwrap_or_default())?),
        };
        let answer_embeddings = manifest
            .models
            .get("teacher")
            .and_then(|e| model_bytes.get(&e.file))
            .and_then(|b| onnx::initializer_f32(b, "answers"))
            .filter(|(dims, _)| dims == &[manifest.teacher.n_heads, manifest.teacher.dim])
            .map(|(_, data)| data);
        let env = environment(opts.library.as_deref())?;
        let mut open = |name: &str| -> Result<Option<Model>> {
            match manifest.models.get(name) {
                None => Ok(None),
                Some(entry) => {
                    let bytes = model_bytes.remove(&entry.file).unwrap_or_default();
                    open_model(env, name, entry, &bytes, manifest.teacher.dim).map(Some)
                }
            }
        };
        let teacher = open("teacher")?.ok_or_else(|| Error::manifest("models: no teacher model"))?;
        let student = open("student")?;
        let routed = open("routed")?;
        let encoder = match (manifest.models.get("encoder"), &manifest.tokenizer) {
            (None, _) => None,
            (Some(_), None) => return Err(Error::manifest("models.encoder needs a tokenizer entry")),
            (Some(entry), Some(tok)) => {
                let bytes = model_bytes.remove(&entry.file).unwrap_or_default();
                let session = session_from_bytes(env, "encoder", &entry.file, &bytes)?;
                drop(bytes);
                let (inputs, outputs) = check_contract(&session, "encoder", entry)?;
                let dim = manifest.teacher.dim;
                text::check_encoder_io(&inputs, &outputs, dim)
                    .map_err(|detail| Error::Contract { model: "encoder".into(), detail })?;
                let json = data.get(&tok.file).cloned().unwrap_or_else(|| Arc::from(Vec::new()));
                let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
                Some(text::Encoder::new(tok, &json, session, &names, dim)?)
            }
        };
        Ok(Bundle {
            root: dir.to_path_buf(),
            manifest,
            manifest_sha256,
            signed_by,
            teacher,
            student,
            routed,
            encoder,
            answers,
            answer_embeddings,
            data,
        })
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
    /// The text encoder (`encoder.onnx` + `tokenizer.json`), when the bundle has one.
    pub fn encoder(&self) -> Option<&text::Encoder> {
        self.encoder.as_ref()
    }
    /// Query embeddings of `texts` (`[batch, d]`), as sentence-transformers computes them.
    pub fn embed_text(&self, texts: &[&str]) -> Result<text::TextEmbeddings> {
        self.encoder.as_ref().ok_or(Error::NoEncoder("encoder"))?.embed(texts)
    }
    /// The answer texts in head order (answers.jsonl), when the bundle has them.
    pub fn answers(&self) -> Option<&[String]> {
        self.answers.as_deref()
    }

    /// Text in, answer out: one [`Answer`] per text, in order.  `model`: "teacher", "student" or
    /// "routed"; None picks the student when the bundle has one, else the teacher.  Teacher and routed
    /// teacher: the head of largest routing weight and that weight; student: the cluster whose answer
    /// embedding is nearest the projection, and that cosine.  Every text is checked before any is answered.
    pub fn ask(&self, texts: &[&str], model: Option<&str>, with_embedding: bool) -> Result<Vec<Answer>> {
        let name = model.unwrap_or(if self.student.is_some() { "student" } else { "teacher" });
        if !["teacher", "student", "routed"].contains(&name) {
            return Err(Error::Input(format!("unknown model {name:?} (use teacher, student or routed)")));
        }
        let m = self.model(name).ok_or_else(|| Error::Input(format!("bundle has no {name} model (pick one it has)")))?;
        let emb = self.embed_text(texts)?;
        let out = m.project(&emb.embeddings)?;
        let tops = self.top(name, &out)?;
        let ids = &self.manifest.teacher.cluster_ids;
        let d = emb.dim;
        Ok(texts
            .iter()
            .zip(tops)
            .enumerate()
            .map(|(i, (text, (k, w)))| Answer {
                text: text.to_string(),
                top_cluster: ids[k].clone(),
                top_weight: w,
                answer: self.answers.as_ref().map(|a| a[k].clone()),
                embedding: with_embedding.then(|| emb.embeddings[i * d..(i + 1) * d].to_vec()),
                truncated: emb.tokens[i].truncated,
            })
            .collect())
    }

    /// (head index, weight or cosine) per row, as Python's `h2l.bundle.text.top`.
    fn top(&self, model: &str, out: &Projection) -> Result<Vec<(usize, f64)>> {
        let n = self.manifest.teacher.n_heads;
        let argmax = |row: &[f32]| row.iter().enumerate().fold((0usize, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b });
        if let Some(r) = &out.routed {
            return (0..out.batch)
                .map(|i| {
                    let (j, w) = argmax(&r.top_weights[i * r.k..(i + 1) * r.k]);
                    let head = usize::try_from(r.top_heads[i * r.k + j]).ok().filter(|&h| h < n);
                    head.map(|h| (h, w as f64)).ok_or_else(|| Error::Contract {
                        model: model.into(),
                        detail: format!("top_heads holds {}, outside 0..{n}", r.top_heads[i * r.k + j]),
                    })
                })
                .collect();
        }
        if let Some(w) = &out.routing_weights {
            return Ok(w.chunks_exact(n).map(|row| { let (k, x) = argmax(row); (k, x as f64) }).collect());
        }
        let a = self.answer_embeddings.as_ref().ok_or_else(|| Error::Contract {
            model: "teacher".into(),
            detail: "teacher.onnx has no answers initializer [N, d] to find the student's nearest cluster".into(),
        })?;
        let d = self.dim();
        let norms: Vec<f64> = a.chunks_exact(d).map(|r| r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()).collect();
        Ok(out
            .projected
            .chunks_exact(d)
            .map(|p| {
                let pn = p.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt().max(1e-30);
                a.chunks_exact(d).zip(&norms).map(|(row, an)| {
                    row.iter().zip(p).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() / (an * pn)
                })
                .enumerate()
                .fold((0usize, f64::NEG_INFINITY), |b, (i, c)| if c > b.1 { (i, c) } else { b })
            })
            .collect())
    }

    /// The routed teacher (`teacher_routed.onnx`), when the bundle has one.
    pub fn routed(&self) -> Option<&Model> {
        self.routed.as_ref()
    }
    pub fn model(&self, name: &str) -> Option<&Model> {
        match name {
            "teacher" => Some(&self.teacher),
            "student" => self.student.as_ref(),
            "routed" => self.routed.as_ref(),
            _ => None,
        }
    }

    /// Project with the routed teacher, and answer with the flat teacher every row whose neglected
    /// mass exceeds `tolerance` (or whose mass is only an estimate, unless `trust_estimate`).
    /// Without a routed teacher every row is the flat teacher's.  The flat rows go in one batch.
    pub fn project_within(&self, queries: &[f32], tolerance: f32, trust_estimate: bool) -> Result<BoundedProjection> {
        let d = self.dim();
        let Some(routed) = &self.routed else {
            let flat = self.teacher.project(queries)?;
            let batch = flat.batch;
            return Ok(BoundedProjection { batch, projected: flat.projected, source: vec![Source::Flat; batch], neglected_mass: vec![0.0; batch] });
        };
        let out = routed.project(queries)?;
        let r = out.routed.ok_or_else(|| Error::MissingOutput { model: routed.name.clone(), output: "routed outputs".into() })?;
        let trusted = r.bound == BoundKind::Proven || trust_estimate;
        let source: Vec<Source> = r
            .neglected_mass
            .iter()
            .map(|&m| if trusted && m <= tolerance { Source::Routed } else { Source::Flat })
            .collect();
        let mut projected = out.projected;
        let flat_rows: Vec<usize> = (0..out.batch).filter(|&i| source[i] == Source::Flat).collect();
        if !flat_rows.is_empty() {
            let q: Vec<f32> = flat_rows.iter().flat_map(|&i| queries[i * d..(i + 1) * d].iter().copied()).collect();
            let flat = self.teacher.project(&q)?;
            for (j, &i) in flat_rows.iter().enumerate() {
                projected[i * d..(i + 1) * d].copy_from_slice(&flat.projected[j * d..(j + 1) * d]);
            }
        }
        Ok(BoundedProjection { batch: out.batch, projected, source, neglected_mass: r.neglected_mass })
    }
    /// sha256 hex of the exact manifest.json bytes this bundle was opened from: its identity.
    pub fn manifest_sha256(&self) -> &str {
        &self.manifest_sha256
    }
    /// sha256 of the teacher this bundle was exported from (`manifest.teacher.sha256`).
    pub fn teacher_sha256(&self) -> &str {
        &self.manifest.teacher.sha256
    }
    /// The key id that signed this bundle, when it was opened with a public key.
    pub fn signed_by(&self) -> Option<&str> {
        self.signed_by.as_deref()
    }
    /// The verified bytes of a referenced non-model file (golden data, tokenizer, answers).
    pub fn file(&self, rel: &str) -> Option<Arc<[u8]>> {
        self.data.get(rel).cloned()
    }
    /// Golden inputs `[rows, d]`, from the verified bytes.
    pub fn golden_inputs(&self) -> Result<npy::Array<f32>> {
        let rel = &self.manifest.golden.inputs;
        npy::parse_f32(&self.file(rel).unwrap_or_else(|| Arc::from(Vec::new())), rel)
    }
    /// A float32 golden output of `model`, from the verified bytes; None when the manifest has none.
    pub fn golden_f32(&self, model: &str, output: &str) -> Option<Result<npy::Array<f32>>> {
        let rel = self.manifest.golden.outputs.get(model)?.get(output)?;
        Some(npy::parse_f32(&self.file(rel)?, rel))
    }
    /// An int64 golden output of `model` (the routed teacher's `top_heads`), from the verified bytes.
    pub fn golden_i64(&self, model: &str, output: &str) -> Option<Result<npy::Array<i64>>> {
        let rel = self.manifest.golden.outputs.get(model)?.get(output)?;
        Some(npy::parse_i64(&self.file(rel)?, rel))
    }
    /// A manifest path resolved safely inside the bundle.
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        safe_path(&self.root, rel)
    }
}

/// One result of [`Bundle::ask`]; serialises to the `ask` JSON line (fields in this order).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    pub text: String,
    pub top_cluster: String,
    pub top_weight: f64,
    pub answer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    pub truncated: bool,
}

/// answers.jsonl: one `{"cluster_id", "answer"}` line per head, in the teacher's cluster order.
fn read_answers(m: &Manifest, info: &manifest::AnswersInfo, bytes: &[u8]) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Row {
        cluster_id: String,
        answer: String,
    }
    let bad = |detail: String| Error::Data { file: info.file.clone(), detail };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let rows: Vec<Row> = text
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| bad(format!("line {}: {e}", i + 1))))
        .collect::<Result<_>>()?;
    if rows.len() != info.count || rows.iter().map(|r| &r.cluster_id).ne(m.teacher.cluster_ids.iter()) {
        return Err(bad("does not hold one answer per head in the teacher's cluster order".into()));
    }
    Ok(rows.into_iter().map(|r| r.answer).collect())
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
fn session_from_bytes(env: &Environment, name: &str, file: &str, bytes: &[u8]) -> Result<Session> {
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

fn check_contract(session: &Session, name: &str, entry: &manifest::ModelEntry) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>)> {
    let inputs: Vec<TensorSpec> = session.inputs().iter().map(|o| spec_of(o.name(), o.dtype())).collect();
    let outputs: Vec<TensorSpec> = session.outputs().iter().map(|o| spec_of(o.name(), o.dtype())).collect();
    for (side, got, want) in [("inputs", &inputs, &entry.inputs), ("outputs", &outputs, &entry.outputs)] {
        if got != want {
            return Err(Error::Contract { model: name.into(), detail: format!("{side}: session {got:?} != manifest {want:?}") });
        }
    }
    Ok((inputs, outputs))
}

fn open_model(env: &Environment, name: &str, entry: &manifest::ModelEntry, bytes: &[u8], dim: usize) -> Result<Model> {
    let session = session_from_bytes(env, name, &entry.file, bytes)?;
    let (inputs, outputs) = check_contract(&session, name, entry)?;
    let contract = |detail: String| Error::Contract { model: name.into(), detail };
    if inputs.len() != 1 || !outputs.iter().any(|o| o.name == "projected_embedding") {
        return Err(contract("expected one input and a projected_embedding output".into()));
    }
    if inputs[0].shape.last() != Some(&Dim::Fixed(dim as i64)) {
        return Err(contract(format!("input shape {:?} does not end in the manifest's d = {dim}", inputs[0].shape)));
    }
    let routed = if name == "routed" { Some(routed_info(entry, &outputs).map_err(contract)?) } else { None };
    Ok(Model {
        name: name.to_string(),
        dim,
        input: inputs[0].name.clone(),
        outputs: outputs.iter().map(|o| o.name.clone()).collect(),
        routed,
        session: Mutex::new(session),
    })
}

/// Check the routed teacher's contract: top_heads int64 [batch, K], top_weights, and the mass output
/// its `bound` names ("proven": neglected_mass_bound, "estimate": neglected_mass_estimate).
fn routed_info(entry: &manifest::ModelEntry, outputs: &[TensorSpec]) -> std::result::Result<RoutedInfo, String> {
    if entry.role != "routed_teacher" {
        return Err(format!("models.routed has role {:?}, expected \"routed_teacher\"", entry.role));
    }
    let (bound, mass_output) = match entry.bound.as_deref() {
        Some("proven") => (BoundKind::Proven, "neglected_mass_bound"),
        Some("estimate") => (BoundKind::Estimate, "neglected_mass_estimate"),
        other => return Err(format!("models.routed.bound is {other:?}, expected \"proven\" or \"estimate\"")),
    };
    let candidates = entry.candidates.filter(|&k| k > 0).ok_or("models.routed.candidates is missing or 0")?;
    let find = |n: &str| outputs.iter().find(|o| o.name == n);
    let heads = find("top_heads").ok_or("no top_heads output")?;
    if heads.dtype != "int64" || heads.shape.last() != Some(&Dim::Fixed(candidates as i64)) {
        return Err(format!("top_heads is {} {:?}, expected int64 [batch, {candidates}]", heads.dtype, heads.shape));
    }
    find("top_weights").ok_or("no top_weights output")?;
    find(mass_output).ok_or_else(|| format!("no {mass_output} output for bound {:?}", entry.bound))?;
    Ok(RoutedInfo { router: entry.router.clone().unwrap_or_default(), candidates, bound, mass_output: mass_output.into() })
}
