//! Text in (issue 13): `tokenizer.json` through the `tokenizers` crate, then `encoder.onnx`
//! (mean pooling and L2 norm inside the graph) to the 384-float query embedding.
//!
//! Truncation comes from the MANIFEST's `tokenizer.max_seq_length` (sentence-transformers' 256), never
//! from the file's own setting (128 in all-MiniLM-L6-v2's tokenizer.json).  Padding is ours: texts of
//! one call are padded to the longest with `pad_id` and attention mask 0.  [`Encoder::embed`] runs one
//! text per call, as Python's reference does, so padding never enters the numbers runtimes compare.
//!
//! Bad input, as in Python: an empty or whitespace-only text and a text with a NUL byte are refused
//! with `Error::Input` (the BERT normaliser would silently turn them into `[CLS] [SEP]`); `&str` is
//! UTF-8 by construction (h2l-rs refuses non-UTF-8 arguments).  A text longer than max_seq_length
//! tokens is cut as sentence-transformers cuts it, and `Tokens::truncated` says so.

use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{Error, Result};
use crate::manifest::{Dim, TokenizerInfo};

/// One tokenized text: ids with the special tokens, and whether the text was cut to fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub truncated: bool,
}

/// Query embeddings of a batch of texts: row-major `[batch, dim]`.
#[derive(Debug, Clone)]
pub struct TextEmbeddings {
    pub batch: usize,
    pub dim: usize,
    pub embeddings: Vec<f32>,
    pub tokens: Vec<Tokens>,
}

/// The bundle's encoder: tokenizer plus `encoder.onnx` session.
pub struct Encoder {
    tokenizer: Tokenizer,
    max_seq_length: usize,
    pad_id: u32,
    type_ids: bool,
    dim: usize,
    session: Mutex<Session>,
}

fn tok_err(what: &str) -> impl FnOnce(tokenizers::Error) -> Error + '_ {
    move |e| Error::Tokenizer(format!("{what}: {e}"))
}

impl Encoder {
    /// `tokenizer_json`: the verified bytes of tokenizer.json.  `session`'s I/O was checked already;
    /// `inputs` are its input names.
    pub(crate) fn new(info: &TokenizerInfo, tokenizer_json: &[u8], session: Session, inputs: &[String], dim: usize) -> Result<Encoder> {
        let mut tokenizer = Tokenizer::from_bytes(tokenizer_json).map_err(tok_err(&info.file))?;
        let truncation = TruncationParams { max_length: info.max_seq_length, ..Default::default() };
        tokenizer.with_truncation(Some(truncation)).map_err(tok_err("truncation"))?;
        tokenizer.with_padding(None);
        let type_ids = inputs.iter().any(|n| n == "token_type_ids");
        Ok(Encoder {
            tokenizer,
            max_seq_length: info.max_seq_length,
            pad_id: info.pad_id.unwrap_or(0),
            type_ids,
            dim,
            session: Mutex::new(session),
        })
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Tokenize one text as sentence-transformers does: special tokens added, cut to max_seq_length.
    pub fn tokenize(&self, text: &str) -> Result<Tokens> {
        let enc = self.tokenizer.encode(text, true).map_err(tok_err("tokenize"))?;
        Ok(Tokens {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            truncated: !enc.get_overflowing().is_empty(),
        })
    }

    /// Embed texts, one session call per text; every text is checked before any is embedded.
    pub fn embed(&self, texts: &[&str]) -> Result<TextEmbeddings> {
        if texts.is_empty() {
            return Err(Error::Input("no texts to embed".into()));
        }
        for (i, t) in texts.iter().enumerate() {
            check_text(t, i)?;
        }
        let tokens = texts.iter().map(|t| self.tokenize(t)).collect::<Result<Vec<_>>>()?;
        let mut embeddings = Vec::with_capacity(texts.len() * self.dim);
        for t in &tokens {
            embeddings.extend(self.run(std::slice::from_ref(t))?);
        }
        Ok(TextEmbeddings { batch: texts.len(), dim: self.dim, embeddings, tokens })
    }

    /// Embed already tokenized texts in one session call, padded to the longest.
    pub fn run(&self, tokens: &[Tokens]) -> Result<Vec<f32>> {
        let (batch, seq) = (tokens.len(), tokens.iter().map(|t| t.ids.len()).max().unwrap_or(0));
        let mut ids = vec![self.pad_id as i64; batch * seq];
        let mut mask = vec![0i64; batch * seq];
        let mut types = vec![0i64; batch * seq];
        for (r, t) in tokens.iter().enumerate() {
            for (c, &id) in t.ids.iter().enumerate() {
                ids[r * seq + c] = id as i64;
                mask[r * seq + c] = 1;
                types[r * seq + c] = t.type_ids.get(c).copied().unwrap_or(0) as i64;
            }
        }
        let tensor = |v: Vec<i64>| Tensor::<i64>::from_array(([batch, seq], v)).map_err(Error::ort("encoder input"));
        let mut session = self.session.lock().map_err(|_| Error::Poisoned("encoder session"))?;
        let outputs = if self.type_ids {
            session.run(ort::inputs!["input_ids" => tensor(ids)?, "attention_mask" => tensor(mask)?, "token_type_ids" => tensor(types)?])
        } else {
            session.run(ort::inputs!["input_ids" => tensor(ids)?, "attention_mask" => tensor(mask)?])
        }
        .map_err(Error::ort("encoder run"))?;
        let value = outputs
            .get("query_embedding")
            .ok_or_else(|| Error::MissingOutput { model: "encoder".into(), output: "query_embedding".into() })?;
        let (_, data) = value.try_extract_tensor::<f32>().map_err(Error::ort("encoder.query_embedding"))?;
        if data.len() != batch * self.dim {
            return Err(Error::Contract { model: "encoder".into(), detail: format!("{} floats for {batch} texts of d = {}", data.len(), self.dim) });
        }
        Ok(data.to_vec())
    }
}

/// Refuse what the encoder cannot mean (the same rule as Python's `check_text`).
pub fn check_text(text: &str, i: usize) -> Result<()> {
    if text.contains('\0') {
        return Err(Error::Input(format!("text #{} contains a NUL byte (remove NUL characters from the text)", i + 1)));
    }
    if text.trim().is_empty() {
        return Err(Error::Input(format!("text #{} is empty or whitespace only (ask a question with some words in it)", i + 1)));
    }
    Ok(())
}

/// The encoder's I/O contract: int64 [batch, sequence] inputs, float32 [batch, d] query_embedding.
pub(crate) fn check_encoder_io(inputs: &[crate::TensorSpec], outputs: &[crate::TensorSpec], dim: usize) -> std::result::Result<(), String> {
    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    if !(names == ["input_ids", "attention_mask"] || names == ["input_ids", "attention_mask", "token_type_ids"]) {
        return Err(format!("inputs {names:?}, expected input_ids, attention_mask[, token_type_ids]"));
    }
    if let Some(bad) = inputs.iter().find(|i| i.dtype != "int64" || i.shape.len() != 2) {
        return Err(format!("input {} is {} {:?}, expected int64 [batch, sequence]", bad.name, bad.dtype, bad.shape));
    }
    let out = outputs.iter().find(|o| o.name == "query_embedding").ok_or("no query_embedding output")?;
    if out.dtype != "float32" || out.shape.last() != Some(&Dim::Fixed(dim as i64)) {
        return Err(format!("query_embedding is {} {:?}, expected float32 [batch, {dim}]", out.dtype, out.shape));
    }
    Ok(())
}
