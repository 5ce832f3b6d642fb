//! Text in, answer out: `Answer`, `Bundle::ask` and its top-cluster helper, and reading
//! answers.jsonl.

use crate::error::{Error, Result};
use crate::manifest::{self, Manifest};
use crate::{Bundle, Projection};

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

impl Bundle {
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
}

/// answers.jsonl: one `{"cluster_id", "answer"}` line per head, in the teacher's cluster order.
pub(crate) fn read_answers(m: &Manifest, info: &manifest::AnswersInfo, bytes: &[u8]) -> Result<Vec<String>> {
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
