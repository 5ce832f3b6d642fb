//! The parts of manifest.json a service needs (see h2l's manifest.schema.json), parsed defensively:
//! a size cap before parsing, serde_json's nesting limit, the failing field named on a wrong type,
//! and the cross-field rules checked before any file is opened.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};

pub const SCHEMA_VERSION: u64 = 1;
/// No real manifest comes near this (10 000 heads is ~0.5 MB); a bigger one is refused unread.
pub const MAX_MANIFEST_BYTES: u64 = 8 << 20;

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub schema_version: u64,
    pub format: String,
    pub h2l_version: String,
    pub name: String,
    pub teacher: TeacherInfo,
    pub models: BTreeMap<String, ModelEntry>,
    pub golden: Golden,
    pub files: Vec<FileEntry>,
    #[serde(default)]
    pub tokenizer: Option<TokenizerInfo>,
    #[serde(default)]
    pub answers: Option<AnswersInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TeacherInfo {
    pub n_heads: usize,
    pub dim: usize,
    pub temperature: f64,
    pub cluster_ids: Vec<String>,
    pub embedding_model: String,
    /// sha256 of the teacher the bundle was exported from: the bundle's version identity.
    pub sha256: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub file: String,
    pub role: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Routed teacher: "screen" or "ivf".
    #[serde(default)]
    pub router: Option<String>,
    /// Routed teacher: K heads scored exactly per query.
    #[serde(default)]
    pub candidates: Option<usize>,
    /// Routed teacher: "proven" or "estimate".
    #[serde(default)]
    pub bound: Option<String>,
    /// Encoder: the sentence-transformers model it was exported from.
    #[serde(default)]
    pub embedding_model: Option<String>,
    #[serde(default)]
    pub max_seq_length: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<Dim>,
}

/// A dimension: fixed (`384`) or symbolic (`"batch"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Golden {
    pub inputs: String,
    pub outputs: BTreeMap<String, BTreeMap<String, String>>,
    pub atol: f64,
    #[serde(default)]
    pub texts: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenizerInfo {
    pub file: String,
    pub max_seq_length: usize,
    pub embedding_model: String,
    #[serde(default)]
    pub pad_id: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AnswersInfo {
    pub file: String,
    pub count: usize,
}

/// Parse manifest bytes (already size-capped by the caller) and check what serde cannot.
pub fn parse(bytes: &[u8]) -> Result<Manifest> {
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(Error::TooLarge { what: "manifest.json".into(), size: bytes.len() as u64, limit: MAX_MANIFEST_BYTES });
    }
    // serde_json stops at 128 levels of nesting, so a deeply nested manifest is an error, not a stack overflow.
    let raw: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Manifest { detail: format!("not JSON: {e}"), source: Some(e) })?;
    let found = raw.get("schema_version").and_then(|v| v.as_u64()).unwrap_or(0);
    if found != SCHEMA_VERSION {
        return Err(Error::SchemaVersion { found, expected: SCHEMA_VERSION });
    }
    let m: Manifest = serde_path_to_error::deserialize(raw).map_err(|e| {
        let detail = format!("{}: {}", e.path(), e.inner());
        Error::Manifest { detail, source: Some(e.into_inner()) }
    })?;
    m.check()?;
    Ok(m)
}

impl Manifest {
    fn check(&self) -> Result<()> {
        let bad = |detail: String| Err(Error::manifest(detail));
        if self.format != "h2l-bundle" {
            return bad(format!("format: {:?} is not \"h2l-bundle\"", self.format));
        }
        let t = &self.teacher;
        if t.dim == 0 || t.n_heads == 0 || t.cluster_ids.len() != t.n_heads {
            return bad(format!(
                "teacher: dim {} and n_heads {} must be positive and n_heads must equal the {} cluster_ids",
                t.dim,
                t.n_heads,
                t.cluster_ids.len()
            ));
        }
        if !(t.temperature.is_finite() && t.temperature > 0.0) {
            return bad(format!("teacher.temperature: {} is not a positive number", t.temperature));
        }
        if !is_sha256(&t.sha256) {
            return bad(format!("teacher.sha256: {:?} is not 64 lowercase hex digits", t.sha256));
        }
        for (i, f) in self.files.iter().enumerate() {
            if !is_sha256(&f.sha256) {
                return bad(format!("files[{i}].sha256: {:?} is not 64 lowercase hex digits", f.sha256));
            }
        }
        if !(self.golden.atol.is_finite() && self.golden.atol > 0.0) {
            return bad(format!("golden.atol: {} is not a positive number", self.golden.atol));
        }
        if let (Some(tok), Some(enc)) = (&self.tokenizer, self.models.get("encoder")) {
            if enc.max_seq_length.is_some_and(|n| n != tok.max_seq_length) || tok.max_seq_length == 0 {
                return bad(format!(
                    "tokenizer.max_seq_length {} disagrees with models.encoder.max_seq_length {:?}",
                    tok.max_seq_length, enc.max_seq_length
                ));
            }
        }
        if !self.models.contains_key("teacher") {
            return bad("models: no teacher model".into());
        }
        Ok(())
    }

    /// Every file the manifest points at (models, golden data, tokenizer, answers): each needs a sha256 entry.
    pub fn referenced(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.models.values().map(|e| e.file.as_str()).collect();
        out.push(self.golden.inputs.as_str());
        out.extend(self.golden.outputs.values().flat_map(|o| o.values().map(String::as_str)));
        out.extend(self.golden.texts.as_deref());
        out.extend(self.tokenizer.as_ref().map(|t| t.file.as_str()));
        out.extend(self.answers.as_ref().map(|a| a.file.as_str()));
        out
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> serde_json::Value {
        let spec = serde_json::json!([{"name": "query_embedding", "dtype": "float32", "shape": ["batch", 4]}]);
        serde_json::json!({
            "schema_version": 1, "format": "h2l-bundle", "h2l_version": "0.1.0", "name": "t",
            "teacher": {"n_heads": 2, "dim": 4, "temperature": 0.1, "cluster_ids": ["a", "b"],
                        "embedding_model": "m", "sha256": "ab".repeat(32)},
            "models": {"teacher": {"file": "teacher.onnx", "role": "teacher", "inputs": spec, "outputs": spec}},
            "golden": {"inputs": "golden/inputs.npy", "outputs": {}, "atol": 1e-5},
            "files": [{"path": "teacher.onnx", "sha256": "cd".repeat(32), "bytes": 10}],
        })
    }

    fn parse_value(v: &serde_json::Value) -> Result<Manifest> {
        parse(serde_json::to_string(v).unwrap().as_bytes())
    }

    #[test]
    fn minimal_manifest_parses() {
        let m = parse_value(&minimal()).unwrap();
        assert_eq!(m.teacher.dim, 4);
        assert_eq!(m.referenced(), vec!["teacher.onnx", "golden/inputs.npy"]);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let mut v = minimal();
        v["teacher"]["dim"] = "four".into();
        let e = parse_value(&v).unwrap_err().to_string();
        assert!(e.contains("teacher.dim") && e.contains("invalid type"), "{e}");
        let mut v = minimal();
        v["files"][0]["bytes"] = (-1).into();
        let e = parse_value(&v).unwrap_err().to_string();
        assert!(e.contains("files[0].bytes"), "{e}");
    }

    #[test]
    fn cross_field_rules() {
        for (path, value, needle) in [
            (("teacher", "n_heads"), serde_json::json!(3), "cluster_ids"),
            (("teacher", "sha256"), serde_json::json!("XYZ"), "teacher.sha256"),
            (("teacher", "temperature"), serde_json::json!(0.0), "temperature"),
            (("golden", "atol"), serde_json::json!(-1.0), "golden.atol"),
        ] {
            let mut v = minimal();
            v[path.0][path.1] = value;
            let e = parse_value(&v).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let mut v = minimal();
        v["format"] = "zip".into();
        assert!(parse_value(&v).unwrap_err().to_string().contains("format"));
    }

    #[test]
    fn nesting_and_size_are_capped() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(deep.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("recursion limit"), "{e}");
        let big = vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize];
        assert!(matches!(parse(&big), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn schema_version_is_checked_first() {
        let mut v = minimal();
        v["schema_version"] = 2.into();
        v["teacher"] = "garbage".into();
        assert!(matches!(parse_value(&v), Err(Error::SchemaVersion { found: 2, expected: 1 })));
    }
}
