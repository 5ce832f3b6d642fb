//! One model of a bundle: its session, what it returns (`Projection`, `Routed`, `BoundedProjection`),
//! and opening it from verified bytes against the manifest's contract (`open_model`, `routed_info`).

use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use crate::contract::{check_contract, session_from_bytes};
use crate::error::{Error, Result};
use crate::manifest::{self, Dim, TensorSpec};
#[cfg(doc)]
use crate::Bundle;

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

pub(crate) fn open_model(env: &Environment, name: &str, entry: &manifest::ModelEntry, bytes: &[u8], dim: usize) -> Result<Model> {
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
