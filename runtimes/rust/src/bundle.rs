//! Opening a bundle (`OpenOptions`, `Bundle::open*`): manifest and signature, every listed file
//! through sha256, sessions from the verified bytes; then the bundle's accessors, `project_within`
//! and golden data.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::ask::read_answers;
use crate::contract::{check_contract, environment, session_from_bytes};
use crate::error::{Error, Result};
use crate::folder::{self, hex, safe_path, Folder};
use crate::manifest::{self, Manifest};
use crate::model::{open_model, BoundKind, BoundedProjection, Model, Source};
use crate::signature::{self, PublicKey};
use crate::{npy, onnx, text};

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
    pub(crate) student: Option<Model>,
    routed: Option<Model>,
    encoder: Option<text::Encoder>,
    /// answers.jsonl in head order, when the bundle has one.
    pub(crate) answers: Option<Vec<String>>,
    /// The teacher's answer embeddings [N, d] (initializer `answers` of teacher.onnx): the student's
    /// top cluster is the one nearest its projection.
    pub(crate) answer_embeddings: Option<Vec<f32>>,
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
