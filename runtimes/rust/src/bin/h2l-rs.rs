//! h2l-rs: smoke-run and time a bundle from Rust.  Output is JSON, one object per line.
//!
//!   h2l-rs [--public-key KEY.pub] BUNDLE             run every golden vector: one line per model/output
//!   h2l-rs [--public-key KEY.pub] BUNDLE --bench N   time N single-query and N batch-32 calls per model:
//!                                                    one line per model/batch on stdout; the golden lines
//!                                                    go to stderr (scripts/runtime_latency.py reads stdout)
//!
//!   h2l-rs ask [--public-key KEY.pub] [--model teacher|student|routed] [--no-embedding] [--bench N] BUNDLE TEXT...
//!                                                    one JSON line per text: text, top_cluster, top_weight,
//!                                                    answer, embedding, truncated (the bundle needs an encoder)
//!
//! Exit codes (h2l's): 0 ok, 2 usage, 3 input, 5 integrity (hash, signature, hostile bundle),
//! 6 parity (a golden output differs), 7 onnxruntime, 8 missing onnxruntime library.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use h2l_runtime::{Error, OpenOptions, Projection, PublicKey};
use serde_json::json;

const USAGE: &str = "usage: h2l-rs [--public-key KEY.pub] BUNDLE [--bench N] | h2l-rs ask [--public-key KEY.pub] \
[--model teacher|student|routed] [--no-embedding] BUNDLE TEXT...";

enum Failure {
    Usage(String),
    Bundle(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Bundle(e)
    }
}

struct Args {
    dir: String,
    bench: usize,
    public_key: Option<String>,
    ask: bool,
    texts: Vec<String>,
    model: Option<String>,
    no_embedding: bool,
}

fn parse_args(args: &[String]) -> Result<Args, Failure> {
    let usage = |why: &str| Failure::Usage(format!("{why}. fix: {USAGE}"));
    let (mut dir, mut bench, mut public_key) = (None, 0usize, None);
    let ask = args.first().is_some_and(|a| a == "ask");
    let (mut texts, mut model, mut no_embedding) = (Vec::new(), None, false);
    let mut it = args.iter().skip(usize::from(ask));
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model" if ask => {
                let m = it.next().ok_or_else(|| usage("--model needs teacher, student or routed"))?;
                if !["teacher", "student", "routed"].contains(&m.as_str()) {
                    return Err(usage(&format!("--model must be teacher, student or routed, not {m:?}")));
                }
                model = Some(m.clone());
            }
            "--no-embedding" if ask => no_embedding = true,
            "--" if ask => texts.extend(it.by_ref().cloned()),
            "--bench" => {
                let n = it.next().ok_or_else(|| usage("--bench needs N"))?;
                bench = n.parse().map_err(|_| usage(&format!("--bench N must be a whole number, not {n:?}")))?;
            }
            "--public-key" => public_key = Some(it.next().ok_or_else(|| usage("--public-key needs KEY.pub"))?.clone()),
            "-h" | "--help" => return Err(Failure::Usage(USAGE.into())),
            s if s.starts_with('-') => return Err(usage(&format!("unknown option {s}"))),
            s if dir.is_none() => dir = Some(s.to_string()),
            s if ask => texts.push(s.to_string()),
            s => return Err(usage(&format!("unexpected argument {s:?}"))),
        }
    }
    let dir = dir.ok_or_else(|| usage("no BUNDLE given"))?;
    if ask && texts.is_empty() {
        return Err(usage("ask needs at least one TEXT"));
    }
    Ok(Args { dir, bench, public_key, ask, texts, model, no_embedding })
}

fn ask(bundle: &h2l_runtime::Bundle, args: &Args) -> Result<bool, Failure> {
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    if args.bench > 0 {
        return ask_bench(bundle, args, texts[0]);
    }
    let answers = bundle.ask(&texts, args.model.as_deref(), !args.no_embedding)?;
    for a in &answers {
        let line = serde_json::to_string(a).map_err(|e| Failure::Usage(format!("cannot write JSON: {e}")))?;
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
    Ok(true)
}

/// `ask --bench N`: time N end-to-end asks of the first text (tokenize, encoder, model, top cluster),
/// and the encoder alone; one JSON line with p50/p99 in µs.
fn ask_bench(bundle: &h2l_runtime::Bundle, args: &Args, text: &str) -> Result<bool, Failure> {
    let model = args.model.as_deref();
    let time = |f: &dyn Fn() -> Result<(), Error>| -> Result<(f64, f64), Failure> {
        for _ in 0..args.bench.min(20) {
            f()?;
        }
        let mut t = Vec::with_capacity(args.bench);
        for _ in 0..args.bench {
            let s = Instant::now();
            f()?;
            t.push(s.elapsed().as_secs_f64() * 1e6);
        }
        t.sort_by(f64::total_cmp);
        let at = |p: f64| t[((p / 100.0) * (t.len() - 1) as f64).round() as usize];
        Ok((at(50.0), at(99.0)))
    };
    let (ask50, ask99) = time(&|| bundle.ask(&[text], model, false).map(drop))?;
    let (enc50, enc99) = time(&|| bundle.embed_text(&[text]).map(drop))?;
    let emb = bundle.embed_text(&[text])?.embeddings;
    let name = model.unwrap_or(if bundle.student().is_some() { "student" } else { "teacher" });
    let m = bundle.model(name).ok_or_else(|| Failure::Bundle(Error::Input(format!("bundle has no {name} model"))))?;
    let (proj50, proj99) = time(&|| m.project(&emb).map(drop))?;
    let tokens = bundle.encoder().map(|e| e.tokenize(text).map(|t| t.ids.len())).transpose()?.unwrap_or(0);
    say(&json!({"runtime": "rust", "task": "ask", "model": name, "text": text, "tokens": tokens,
                "calls": args.bench, "ask_p50_us": ask50, "ask_p99_us": ask99, "encoder_p50_us": enc50,
                "encoder_p99_us": enc99, "model_p50_us": proj50, "model_p99_us": proj99}));
    Ok(true)
}

fn run(args: &[String]) -> Result<bool, Failure> {
    if args.first().is_some_and(|a| a == "ask") && args.len() == 1 {
        return Err(Failure::Usage(format!("ask needs BUNDLE and TEXT. fix: {USAGE}")));
    }
    let args = parse_args(args)?;
    let mut options = OpenOptions::new();
    if let Some(k) = &args.public_key {
        options = options.public_key(PublicKey::from_pem_file(k)?);
    }
    let bundle = options.open(&args.dir)?;
    if args.ask {
        return ask(&bundle, &args);
    }
    let inputs = bundle.golden_inputs()?;
    let d = bundle.dim();
    let rows = inputs.shape.first().copied().unwrap_or(0);
    let bench = args.bench > 0;
    let emit = |line: serde_json::Value| if bench { eprintln!("{line}") } else { say(&line) };
    emit(
        json!({"opened": args.dir, "n_heads": bundle.manifest.teacher.n_heads, "dim": d, "golden_rows": rows,
               "teacher_sha256": bundle.teacher_sha256(), "signed_by": bundle.signed_by()}));
    let atol = bundle.manifest.golden.atol;
    let mut ok = true;
    for (name, outs) in &bundle.manifest.golden.outputs {
        let Some(model) = bundle.model(name) else { continue };
        let got = model.project(&inputs.data)?;
        for out in outs.keys() {
            let (diff, same_len) = if out == "top_heads" {
                let Some(want) = bundle.golden_i64(name, out) else { continue };
                let want = want?;
                let have = got.routed.as_ref().map(|r| r.top_heads.clone()).unwrap_or_default();
                let mismatches = have.iter().zip(&want.data).filter(|(a, b)| a != b).count();
                (mismatches as f32, have.len() == want.data.len())
            } else {
                let Some(want) = bundle.golden_f32(name, out) else { continue };
                let want = want?;
                let have = output_f32(&got, out).unwrap_or_default();
                let diff = have.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                (diff, have.len() == want.data.len())
            };
            let pass = same_len && (diff as f64) <= if out == "top_heads" { 0.0 } else { atol };
            ok &= pass;
            if out == "top_heads" {
                emit(json!({"model": name, "output": out, "mismatches": diff as usize, "pass": pass}));
            } else {
                emit(json!({"model": name, "output": out, "max_abs_diff": diff, "atol": atol, "pass": pass}));
            }
        }
    }
    if let (Some(enc), Some(rel)) = (bundle.encoder(), bundle.manifest.golden.texts.as_ref()) {
        // Text in: token ids and embeddings of the golden texts against Python's.
        let golden: Vec<serde_json::Value> = bundle
            .file(rel)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Failure::Bundle(Error::Input(format!("{rel} is not a JSON list"))))?;
        let texts: Vec<&str> = golden.iter().filter_map(|g| g["text"].as_str()).collect();
        let ids_equal = golden.iter().all(|g| {
            let want: Option<Vec<u32>> = serde_json::from_value(g["input_ids"].clone()).ok();
            g["text"].as_str().and_then(|t| enc.tokenize(t).ok()).map(|t| t.ids) == want
        });
        let emb = bundle.embed_text(&texts)?;
        if let Some(want) = bundle.golden_f32("encoder", "query_embedding") {
            let want = want?;
            let diff = emb.embeddings.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let pass = ids_equal && emb.embeddings.len() == want.data.len() && (diff as f64) <= atol;
            ok &= pass;
            emit(json!({"model": "encoder", "output": "query_embedding", "texts": texts.len(), "ids_equal": ids_equal,
                        "max_abs_diff": diff, "atol": atol, "pass": pass}));
        }
    }
    if bench && rows > 0 {
        for name in ["teacher", "student"] {
            let Some(model) = bundle.model(name) else { continue };
            for batch in [1usize, 32] {
                let q: Vec<f32> = (0..batch).flat_map(|i| inputs.data[(i % rows) * d..(i % rows + 1) * d].to_vec()).collect();
                for _ in 0..args.bench.min(50) {
                    model.project(&q)?;
                }
                let mut times = Vec::with_capacity(args.bench);
                for _ in 0..args.bench {
                    let t = Instant::now();
                    model.project(&q)?;
                    times.push(t.elapsed().as_secs_f64() * 1e6);
                }
                times.sort_by(f64::total_cmp);
                let p50 = times[times.len() / 2];
                say(&json!({"runtime": "rust", "model": name, "batch": batch, "p50_us": p50, "per_query_us": p50 / batch as f64}));
            }
        }
    }
    Ok(ok)
}

/// A float32 output of a projection by its ONNX name.
fn output_f32(p: &Projection, name: &str) -> Option<Vec<f32>> {
    match name {
        "projected_embedding" => Some(p.projected.clone()),
        "routing_weights" => p.routing_weights.clone(),
        "top_weights" => p.routed.as_ref().map(|r| r.top_weights.clone()),
        "neglected_mass_bound" | "neglected_mass_estimate" => p.routed.as_ref().map(|r| r.neglected_mass.clone()),
        _ => None,
    }
}

/// One JSON line on stdout; a closed pipe (`h2l-rs B | head -1`) is not an error worth a panic.
fn say(line: &serde_json::Value) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn main() -> ExitCode {
    let mut args = Vec::new();
    for (i, a) in std::env::args_os().skip(1).enumerate() {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(_) => {
                eprintln!("error: argument #{} is not valid UTF-8. fix: pass UTF-8 text", i + 1);
                return ExitCode::from(3);
            }
        }
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(6),
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Bundle(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
