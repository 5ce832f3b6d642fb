//! The parts of manifest.json a service needs (see h2l's manifest.schema.json).

use std::collections::BTreeMap;

use serde::Deserialize;

pub const SCHEMA_VERSION: u64 = 1;

#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub schema_version: u64,
    pub name: String,
    pub teacher: TeacherInfo,
    pub models: BTreeMap<String, ModelEntry>,
    pub golden: Golden,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TeacherInfo {
    pub n_heads: usize,
    pub dim: usize,
    pub temperature: f64,
    pub cluster_ids: Vec<String>,
    pub embedding_model: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub file: String,
    pub role: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
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
}

#[derive(Debug, Clone, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}
