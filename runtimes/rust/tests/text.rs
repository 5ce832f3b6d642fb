//! Text in, answer out (issue 13): tokenizer.json through the `tokenizers` crate, encoder.onnx, `ask`.
//! Bundle: H2L_BUNDLE_TEXT, else H2L_BUNDLE when it has an encoder; otherwise skipped with the reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{copy_dir, edit_manifest, Scratch};
use h2l_runtime::{Bundle, Error};

fn text_dir(test: &str) -> Option<PathBuf> {
    let base = common::env()?;
    let dir = std::env::var_os("H2L_BUNDLE_TEXT").map(PathBuf::from).unwrap_or(base);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    if m["models"].get("encoder").is_none() {
        eprintln!("skipped {test}: {} has no encoder (set H2L_BUNDLE_TEXT; `h2l export --with-encoder`)", dir.display());
        return None;
    }
    Some(dir)
}

fn golden_texts(b: &Bundle) -> Vec<serde_json::Value> {
    let rel = b.manifest.golden.texts.as_ref().expect("golden.texts");
    serde_json::from_slice(&b.file(rel).unwrap()).unwrap()
}

#[test]
fn token_ids_embeddings_and_top_clusters_match_python() {
    let Some(dir) = text_dir("token_ids_embeddings_and_top_clusters_match_python") else { return };
    let b = Bundle::open(&dir).unwrap();
    let enc = b.encoder().unwrap();
    assert_eq!(enc.max_seq_length(), b.manifest.tokenizer.as_ref().unwrap().max_seq_length);
    let golden = golden_texts(&b);
    let texts: Vec<&str> = golden.iter().map(|g| g["text"].as_str().unwrap()).collect();
    assert!(golden.iter().any(|g| g["truncated"] == true), "golden texts include one longer than max_seq_length");
    for g in &golden {
        let t = enc.tokenize(g["text"].as_str().unwrap()).unwrap();
        let want: Vec<u32> = serde_json::from_value(g["input_ids"].clone()).unwrap();
        assert_eq!(t.ids, want, "token ids of {:?}", g["text"]);
        assert_eq!(t.truncated, g["truncated"] == true, "truncated flag of {:?}", g["text"]);
        assert!(t.ids.len() <= enc.max_seq_length());
    }
    let emb = b.embed_text(&texts).unwrap();
    let want = b.golden_f32("encoder", "query_embedding").unwrap().unwrap();
    assert_eq!(want.shape, vec![texts.len(), b.dim()]);
    let diff = emb.embeddings.iter().zip(&want.data).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-5, "embeddings differ from Python's by {diff}");

    let default = b.ask(&texts, None, true).unwrap();
    for (g, a) in golden.iter().zip(&default) {
        assert_eq!(a.top_cluster, g["top_cluster"].as_str().unwrap(), "{:?}", g["text"]);
        assert_eq!(a.truncated, g["truncated"] == true);
        assert_eq!(a.embedding.as_ref().unwrap().len(), b.dim());
        let k = b.manifest.teacher.cluster_ids.iter().position(|c| *c == a.top_cluster).unwrap();
        assert_eq!(a.answer.as_deref(), b.answers().map(|ans| ans[k].as_str()));
    }
    let models = golden[0]["top_clusters"].as_object().expect("top_clusters per model");
    for model in models.keys() {
        let got = b.ask(&texts, Some(model), false).unwrap();
        for (g, a) in golden.iter().zip(&got) {
            assert_eq!(a.top_cluster, g["top_clusters"][model].as_str().unwrap(), "{model}: {:?}", g["text"]);
            assert!(a.embedding.is_none());
        }
    }
}

#[test]
fn bad_text_is_refused_and_long_text_is_truncated() {
    let Some(dir) = text_dir("bad_text_is_refused_and_long_text_is_truncated") else { return };
    let b = Bundle::open(&dir).unwrap();
    for bad in ["", "   \t\n", "a\0b"] {
        assert!(matches!(b.ask(&["fine question", bad], None, false), Err(Error::Input(_))), "{bad:?}");
    }
    assert!(matches!(b.ask(&["q"], Some("nonsense"), false), Err(Error::Input(_))));
    let long = "spokes and rims ".repeat(400);
    let a = b.ask(&[&long], None, false).unwrap();
    assert!(a[0].truncated);
    let n = b.encoder().unwrap().tokenize(&long).unwrap().ids.len();
    assert_eq!(n, b.encoder().unwrap().max_seq_length());
}

/// A copy with encoder.onnx hard-linked (90 MB), for manifest edits.
fn linked_copy(src: &Path, tag: &str) -> Scratch {
    let s = Scratch::new(tag);
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = s.path().join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else if e.file_name() == "encoder.onnx" {
            std::fs::hard_link(e.path(), &to).unwrap_or_else(|_| drop(std::fs::copy(e.path(), &to)));
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
    s
}

#[test]
fn truncation_comes_from_the_manifest_not_the_file() {
    let Some(dir) = text_dir("truncation_comes_from_the_manifest_not_the_file") else { return };
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
    let b = Bundle::open(&dir).unwrap();
    let long = golden_texts(&b).into_iter().map(|g| g["input_ids"].as_array().unwrap().len()).max().unwrap();
    let own = file["truncation"]["max_length"].as_u64();
    assert!(own.is_some_and(|n| (n as usize) < long), "the file's own truncation ({own:?}) would cut a golden text");
    // Halve the manifest's length: the runtime follows it.
    let s = linked_copy(&dir, "trunc");
    let half = b.encoder().unwrap().max_seq_length() / 2;
    edit_manifest(s.path(), |v| {
        v["tokenizer"]["max_seq_length"] = half.into();
        if v["models"]["encoder"].get("max_seq_length").is_some() {
            v["models"]["encoder"]["max_seq_length"] = half.into();
        }
    });
    let short = Bundle::open(s.path()).unwrap();
    let t = short.encoder().unwrap().tokenize(&"chain ".repeat(500)).unwrap();
    assert_eq!((t.ids.len(), t.truncated), (half, true));
    // The two lengths must agree.
    edit_manifest(s.path(), |v| v["tokenizer"]["max_seq_length"] = (half + 1).into());
    if b.manifest.models["encoder"].max_seq_length.is_some() {
        assert!(matches!(Bundle::open(s.path()), Err(Error::Manifest { .. })));
    }
}

#[test]
fn h2l_rs_ask_prints_one_json_line_per_text() {
    let Some(dir) = text_dir("h2l_rs_ask_prints_one_json_line_per_text") else { return };
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_h2l-rs")).args(args).output().unwrap();
    let d = dir.to_str().unwrap();
    let out = run(&["ask", d, "How do I fix a flat tyre?", "why does my chain skip?"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["text"], "why does my chain skip?");
    let keys: Vec<&str> = lines[0].as_object().unwrap().keys().map(String::as_str).collect();
    for k in ["text", "top_cluster", "top_weight", "answer", "embedding", "truncated"] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    let quiet = run(&["ask", "--no-embedding", d, "brakes squeal"]);
    let line: serde_json::Value = serde_json::from_slice(&quiet.stdout).unwrap();
    assert!(line.get("embedding").is_none());
    let empty = run(&["ask", d, "ok", ""]);
    assert_eq!(empty.status.code(), Some(3));
    assert!(empty.stdout.is_empty(), "no partial output");
    assert_eq!(run(&["ask", d]).status.code(), Some(2));
    assert_eq!(run(&["ask", "--model", "bogus", d, "q"]).status.code(), Some(2));
}

#[test]
fn ask_on_a_bundle_without_encoder_says_so() {
    let Some(base) = common::env() else { return };
    let b = Bundle::open(&base).unwrap();
    if b.encoder().is_some() {
        return;
    }
    let e = b.ask(&["q"], None, false).unwrap_err();
    assert!(matches!(e, Error::NoEncoder(_)) && e.exit_code() == 3, "{e}");
}

#[test]
fn answers_out_of_cluster_order_are_refused() {
    let Some(dir) = text_dir("answers_out_of_cluster_order_are_refused") else { return };
    let b = Bundle::open(&dir).unwrap();
    let Some(info) = b.manifest.answers.clone() else {
        eprintln!("note: {} has no answers.jsonl", dir.display());
        return;
    };
    let s = linked_copy(&dir, "answers");
    let text = std::fs::read_to_string(dir.join(&info.file)).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(0, 1);
    common::replace_file(s.path(), &info.file, (lines.join("\n") + "\n").as_bytes());
    let e = Bundle::open(s.path()).err().expect("answers in the wrong order opened");
    assert!(matches!(&e, Error::Data { file, .. } if *file == info.file), "{e}");
}
