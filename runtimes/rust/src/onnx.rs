//! A small walk over an ONNX protobuf before onnxruntime sees it (issue 15).
//!
//! A session built from memory resolves external-data locations against the process's working
//! directory, so an initializer that says "my data is in ../secret.bin" would make onnxruntime read a
//! file outside the bundle.  h2l bundles never store tensors as external data; this walk finds every
//! TensorProto (graph initializers, sparse initializers, node attributes, subgraphs, functions,
//! training info) and refuses the model if any keeps data outside the file.  It also checks that the
//! protobuf framing is whole, so a truncated model gets a clear refusal.

/// What the walk found wrong.
#[derive(Debug, PartialEq)]
pub enum Problem {
    /// A tensor with data_location = EXTERNAL or external_data entries.
    External { tensor: String, location: String },
    /// Bad framing (truncated, overlong varint, unsupported wire type, nesting too deep, no graph).
    Malformed(String),
}

const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy)]
enum Msg {
    Model,
    TrainingInfo,
    Function,
    Graph,
    Node,
    Attribute,
    SparseTensor,
    Tensor,
    Entry,
}

/// The sub-messages of `msg` that can (transitively) hold a TensorProto, by field number.
fn child(msg: Msg, field: u64) -> Option<Msg> {
    use Msg::*;
    match (msg, field) {
        (Model, 7) => Some(Graph),
        (Model, 20) => Some(TrainingInfo),
        (Model, 25) => Some(Function),
        (TrainingInfo, 1 | 2) => Some(Graph),
        (Function, 7) => Some(Node),
        (Function, 11) => Some(Attribute),
        (Graph, 1) => Some(Node),
        (Graph, 5) => Some(Tensor),
        (Graph, 15) => Some(SparseTensor),
        (Node, 5) => Some(Attribute),
        (Attribute, 5 | 10) => Some(Tensor),
        (Attribute, 6 | 11) => Some(Graph),
        (Attribute, 22 | 23) => Some(SparseTensor),
        (SparseTensor, 1 | 2) => Some(Tensor),
        (Tensor, 13) => Some(Entry),
        _ => None,
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, Problem> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.cut("a varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Problem::Malformed(format!("varint longer than 10 bytes at byte {}", self.base + self.pos)))
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], Problem> {
        let n = usize::try_from(n).map_err(|_| self.cut(what))?;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            Problem::Malformed(format!(
                "truncated: {what} at byte {} claims {n} bytes, {} remain",
                self.base + self.pos,
                self.buf.len() - self.pos
            ))
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn cut(&self, what: &str) -> Problem {
        Problem::Malformed(format!("truncated: {what} at byte {}", self.base + self.pos))
    }
}

#[derive(Default)]
struct TensorInfo {
    name: String,
    external: bool,
    location: Option<String>,
}

/// Walk one message; `tensor` collects a TensorProto's fields, `entry` a StringStringEntryProto's.
fn walk(
    buf: &[u8],
    base: usize,
    msg: Msg,
    depth: usize,
    tensor: &mut TensorInfo,
    entry: &mut (String, String),
    saw_graph: &mut bool,
) -> Result<(), Problem> {
    if depth > MAX_DEPTH {
        return Err(Problem::Malformed(format!("messages nested deeper than {MAX_DEPTH}")));
    }
    let mut r = Reader { buf, pos: 0, base };
    while r.pos < buf.len() {
        let key = r.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err(Problem::Malformed(format!("field number 0 at byte {}", base + r.pos)));
        }
        match wire {
            0 => {
                let v = r.varint()?;
                if matches!(msg, Msg::Tensor) && field == 14 && v == 1 {
                    tensor.external = true;
                }
            }
            1 => {
                r.take(8, "a fixed64")?;
            }
            5 => {
                r.take(4, "a fixed32")?;
            }
            2 => {
                let len = r.varint()?;
                let start = base + r.pos;
                let body = r.take(len, &format!("field {field}"))?;
                match (msg, field, child(msg, field)) {
                    (Msg::Tensor, 8, _) => tensor.name = String::from_utf8_lossy(body).into_owned(),
                    (Msg::Entry, 1, _) => entry.0 = String::from_utf8_lossy(body).into_owned(),
                    (Msg::Entry, 2, _) => entry.1 = String::from_utf8_lossy(body).into_owned(),
                    (_, _, Some(Msg::Tensor)) => {
                        let mut t = TensorInfo::default();
                        walk(body, start, Msg::Tensor, depth + 1, &mut t, entry, saw_graph)?;
                        if t.external {
                            return Err(Problem::External {
                                tensor: t.name,
                                location: t.location.unwrap_or_else(|| "<no location>".into()),
                            });
                        }
                    }
                    (_, _, Some(Msg::Entry)) => {
                        let mut e = (String::new(), String::new());
                        walk(body, start, Msg::Entry, depth + 1, tensor, &mut e, saw_graph)?;
                        tensor.external = true;
                        if e.0 == "location" || tensor.location.is_none() {
                            tensor.location = Some(e.1);
                        }
                    }
                    (_, _, Some(sub)) => {
                        if matches!((msg, sub), (Msg::Model, Msg::Graph)) {
                            *saw_graph = true;
                        }
                        walk(body, start, sub, depth + 1, tensor, entry, saw_graph)?;
                    }
                    _ => {}
                }
            }
            w => return Err(Problem::Malformed(format!("unsupported wire type {w} at byte {}", base + r.pos))),
        }
    }
    Ok(())
}

/// Check a serialized ModelProto: whole framing, a graph, and no tensor with external data.
pub fn check_model(bytes: &[u8]) -> Result<(), Problem> {
    let mut saw_graph = false;
    walk(bytes, 0, Msg::Model, 0, &mut TensorInfo::default(), &mut (String::new(), String::new()), &mut saw_graph)?;
    if !saw_graph {
        return Err(Problem::Malformed("no graph (field 7) in the ModelProto".into()));
    }
    Ok(())
}

/// A float32 graph initializer by name, as (dims, row-major data): how `ask` reads the teacher's answer
/// embeddings (`answers`, [N, d]) to pick the student's nearest cluster, as Python's teacher_arrays does.
/// Call after [`check_model`] (framing already known to be whole).
pub fn initializer_f32(model: &[u8], name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
    fn fields(buf: &[u8]) -> Option<Vec<(u64, u64, &[u8])>> {
        let mut r = Reader { buf, pos: 0, base: 0 };
        let mut out = Vec::new();
        while r.pos < buf.len() {
            let key = r.varint().ok()?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => out.push((field, r.varint().ok()?, &[][..])),
                1 => { r.take(8, "").ok()?; }
                5 => { r.take(4, "").ok()?; }
                2 => {
                    let len = r.varint().ok()?;
                    out.push((field, 0, r.take(len, "").ok()?));
                }
                _ => return None,
            }
        }
        Some(out)
    }
    let graph = fields(model)?.into_iter().filter(|f| f.0 == 7).map(|f| f.2);
    for g in graph {
        for (_, _, t) in fields(g)?.into_iter().filter(|f| f.0 == 5) {
            let tf = fields(t)?;
            if !tf.iter().any(|f| f.0 == 8 && f.2 == name.as_bytes()) {
                continue;
            }
            if tf.iter().any(|f| f.0 == 2 && f.2.is_empty() && f.1 != 1) {
                return None; // not FLOAT
            }
            let mut dims = Vec::new();
            for (field, v, body) in &tf {
                if *field == 1 {
                    if body.is_empty() {
                        dims.push(*v as usize);
                    } else {
                        let mut r = Reader { buf: body, pos: 0, base: 0 };
                        while r.pos < body.len() {
                            dims.push(r.varint().ok()? as usize);
                        }
                    }
                }
            }
            let raw: Vec<u8> = match tf.iter().find(|f| f.0 == 9) {
                Some(f) => f.2.to_vec(),
                None => tf.iter().filter(|f| f.0 == 4).flat_map(|f| f.2.iter().copied()).collect(),
            };
            let data: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            return (dims.iter().product::<usize>() == data.len()).then_some((dims, data));
        }
    }
    None
}

/// Minimal protobuf writing, for tests that build hostile models by hand.
pub mod write {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    /// A length-delimited field.
    pub fn bytes(out: &mut Vec<u8>, field: u64, body: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, body.len() as u64);
        out.extend_from_slice(body);
    }
    /// A varint field.
    pub fn uint(out: &mut Vec<u8>, field: u64, v: u64) {
        varint(out, field << 3);
        varint(out, v);
    }
    /// A TensorProto (float, dims [n]) whose data lives in external file `location`.
    pub fn external_tensor(name: &str, n: u64, location: &str) -> Vec<u8> {
        let mut t = Vec::new();
        uint(&mut t, 1, n); // dims
        uint(&mut t, 2, 1); // data_type FLOAT
        bytes(&mut t, 8, name.as_bytes());
        for (k, v) in [("location", location), ("offset", "0"), ("length", &(4 * n).to_string())] {
            let mut e = Vec::new();
            bytes(&mut e, 1, k.as_bytes());
            bytes(&mut e, 2, v.as_bytes());
            bytes(&mut t, 13, &e);
        }
        uint(&mut t, 14, 1); // data_location EXTERNAL
        t
    }
}

#[cfg(test)]
mod tests {
    use super::write::*;
    use super::*;

    fn model(graph: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        uint(&mut m, 1, 8); // ir_version
        bytes(&mut m, 7, graph);
        m
    }

    fn inline_tensor() -> Vec<u8> {
        let mut t = Vec::new();
        uint(&mut t, 1, 2);
        uint(&mut t, 2, 1);
        bytes(&mut t, 8, b"w");
        bytes(&mut t, 9, &[0u8; 8]); // raw_data
        t
    }

    #[test]
    fn inline_model_passes() {
        let mut g = Vec::new();
        bytes(&mut g, 5, &inline_tensor());
        bytes(&mut g, 2, b"graph");
        assert_eq!(check_model(&model(&g)), Ok(()));
    }

    #[test]
    fn external_initializer_is_found() {
        let mut g = Vec::new();
        bytes(&mut g, 5, &inline_tensor());
        bytes(&mut g, 5, &external_tensor("secret", 4, "../secret.bin"));
        assert_eq!(
            check_model(&model(&g)),
            Err(Problem::External { tensor: "secret".into(), location: "../secret.bin".into() })
        );
    }

    #[test]
    fn external_tensor_in_a_subgraph_attribute_is_found() {
        // graph -> node -> attribute (g) -> graph -> node -> attribute (t) -> external tensor
        let mut attr_t = Vec::new();
        bytes(&mut attr_t, 5, &external_tensor("deep", 1, "data.bin"));
        let mut inner_node = Vec::new();
        bytes(&mut inner_node, 5, &attr_t);
        let mut inner_graph = Vec::new();
        bytes(&mut inner_graph, 1, &inner_node);
        let mut attr_g = Vec::new();
        bytes(&mut attr_g, 6, &inner_graph);
        let mut node = Vec::new();
        bytes(&mut node, 5, &attr_g);
        let mut g = Vec::new();
        bytes(&mut g, 1, &node);
        assert!(matches!(check_model(&model(&g)), Err(Problem::External { tensor, .. }) if tensor == "deep"));
    }

    #[test]
    fn data_location_alone_is_external() {
        let mut t = inline_tensor();
        uint(&mut t, 14, 1);
        let mut g = Vec::new();
        bytes(&mut g, 5, &t);
        assert!(matches!(check_model(&model(&g)), Err(Problem::External { .. })));
    }

    #[test]
    fn truncation_and_garbage_are_malformed() {
        let mut g = Vec::new();
        bytes(&mut g, 5, &inline_tensor());
        let m = model(&g);
        for cut in 1..m.len() {
            assert!(matches!(check_model(&m[..cut]), Err(Problem::Malformed(_))), "cut at {cut}");
        }
        assert!(matches!(check_model(b"PK\x03\x04zipzipzip"), Err(Problem::Malformed(_))));
        assert!(matches!(check_model(&[]), Err(Problem::Malformed(m)) if m.contains("no graph")));
        assert!(matches!(check_model(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), Err(Problem::Malformed(_))));
    }

    #[test]
    fn initializer_is_read_back() {
        let mut t = Vec::new();
        uint(&mut t, 1, 2);
        uint(&mut t, 1, 3);
        uint(&mut t, 2, 1);
        bytes(&mut t, 8, b"answers");
        let vals: Vec<u8> = (0..6).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
        bytes(&mut t, 9, &vals);
        let mut g = Vec::new();
        bytes(&mut g, 5, &inline_tensor());
        bytes(&mut g, 5, &t);
        let m = model(&g);
        assert_eq!(initializer_f32(&m, "answers"), Some((vec![2, 3], vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5])));
        assert_eq!(initializer_f32(&m, "keys"), None);
    }

    #[test]
    fn nesting_is_capped() {
        let mut g = Vec::new();
        for _ in 0..200 {
            let mut attr = Vec::new();
            bytes(&mut attr, 6, &g);
            let mut node = Vec::new();
            bytes(&mut node, 5, &attr);
            g = Vec::new();
            bytes(&mut g, 1, &node);
        }
        assert!(matches!(check_model(&model(&g)), Err(Problem::Malformed(m)) if m.contains("nested")));
    }
}
