//! h2l-rs: smoke-run and time a bundle from Rust.  Output is JSON, one object per line.
//!
//!   h2l-rs [--public-key KEY.pub] BUNDLE             run every golden vector: one line per model/output
//!   h2l-rs [--public-key KEY.pub] BUNDLE --bench N   time N single-query and N batch-32 calls per model:
//!                                                    one line per model/batch on stdout; the golden lines
//!                                                    go to stderr (scripts/runtime_latency.py reads stdout)
//!
//! Exit codes (h2l's): 0 ok, 2 usage, 3 input, 5 integrity (hash, signature, hostile bundle),
//! 6 parity (a golden output differs), 7 onnxruntime, 8 missing onnxruntime library.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use h2l_runtime::{Error, OpenOptions, Projection, PublicKey};
use serde_json::json;

const USAGE: &str = "usage: h2l-rs [--public-key KEY.pub] BUNDLE [--bench N]";

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
}

fn parse_args(args: &[String]) -> Result<Args, Failure> {
    let usage = |why: &str| Failure::Usage(format!("{why}. fix: {USAGE}"));
    let (mut dir, mut bench, mut public_key) = (None, 0usize, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => {
                let n = it.next().ok_or_else(|| usage("--bench needs N"))?;
                bench = n.parse().map_err(|_| usage(&format!("--bench N must be a whole number, not {n:?}")))?;
            }
            "--public-key" => public_key = Some(it.next().ok_or_else(|| usage("--public-key needs KEY.pub"))?.clone()),
            "-h" | "--help" => return Err(Failure::Usage(USAGE.into())),
            s if s.starts_with('-') => return Err(usage(&format!("unknown option {s}"))),
            s if dir.is_none() => dir = Some(s.to_string()),
            s => return Err(usage(&format!("unexpected argument {s:?}"))),
        }
    }
    Ok(Args { dir: dir.ok_or_else(|| usage("no BUNDLE given"))?, bench, public_key })
}

fn run(args: &[String]) -> Result<bool, Failure> {
    let args = parse_args(args)?;
    let mut options = OpenOptions::new();
    if let Some(k) = &args.public_key {
        options = options.public_key(PublicKey::from_pem_file(k)?);
    }
    let bundle = options.open(&args.dir)?;
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
    let args: Vec<String> = std::env::args().skip(1).collect();
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
