//! h2l-rs: smoke-run and time a bundle from Rust.
//!
//!   h2l-rs BUNDLE                 run every golden vector, print the max abs diff per model/output
//!   h2l-rs BUNDLE --bench N       also time N single-query and N batch-32 calls per model (JSON lines)

use std::process::ExitCode;
use std::time::Instant;

use h2l_runtime::{npy, Bundle};

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or("usage: h2l-rs BUNDLE [--bench N]")?;
    let bench: usize = match args.iter().position(|a| a == "--bench") {
        Some(i) => args.get(i + 1).ok_or("--bench needs N")?.parse()?,
        None => 0,
    };
    let bundle = Bundle::open(dir)?;
    let (shape, inputs) = npy::read_f32(&bundle.path(&bundle.manifest.golden.inputs)?)?;
    let d = bundle.dim();
    println!("opened {dir}: N = {}, d = {d}, {} golden queries", bundle.manifest.teacher.n_heads, shape[0]);
    let mut ok = true;
    for (name, outs) in &bundle.manifest.golden.outputs {
        let model = bundle.model(name).ok_or("golden output for a model that is not in the bundle")?;
        let got = model.project(&inputs)?;
        for (out, rel) in outs {
            let (_, want) = npy::read_f32(&bundle.path(rel)?)?;
            let have = if out == "routing_weights" { got.routing_weights.clone().unwrap_or_default() } else { got.projected.clone() };
            let diff = have.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let pass = have.len() == want.len() && (diff as f64) <= bundle.manifest.golden.atol;
            ok &= pass;
            println!("{name}.{out}: max abs diff {diff:.3e} {}", if pass { "ok" } else { "FAIL" });
        }
    }
    for name in ["teacher", "student"] {
        let Some(model) = bundle.model(name) else { continue };
        for batch in [1usize, 32] {
            if bench == 0 {
                break;
            }
            let q: Vec<f32> = (0..batch).flat_map(|i| inputs[(i % shape[0]) * d..(i % shape[0] + 1) * d].to_vec()).collect();
            for _ in 0..bench.min(50) {
                model.project(&q)?;
            }
            let mut times: Vec<f64> = (0..bench)
                .map(|_| {
                    let t = Instant::now();
                    model.project(&q).map(|_| t.elapsed().as_secs_f64() * 1e6)
                })
                .collect::<Result<_, _>>()?;
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let p50 = times[times.len() / 2];
            println!("{{\"runtime\": \"rust\", \"model\": \"{name}\", \"batch\": {batch}, \"p50_us\": {p50:.2}, \"per_query_us\": {:.3}}}", p50 / batch as f64);
        }
    }
    Ok(ok)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(6),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(5)
        }
    }
}
