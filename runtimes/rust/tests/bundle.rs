//! Integration tests against a bundle made by the Python CLI in the same CI run (see tests/common).

mod common;

use std::sync::{Arc, Barrier};

use common::{edit_manifest, env, Scratch};
use h2l_runtime::{npy, Bundle, Error};

#[test]
fn golden_vectors_match_python() {
    let Some(dir) = env() else { return };
    let bundle = Bundle::open(&dir).expect("open bundle");
    let inputs = bundle.golden_inputs().unwrap();
    assert_eq!(inputs.shape[1], bundle.dim());
    let mut checked = 0;
    for (name, outs) in &bundle.manifest.golden.outputs {
        let Some(model) = bundle.model(name) else {
            assert_eq!(name, "encoder", "golden outputs for a model the runtime did not open");
            continue; // text in, not embeddings: tests/text.rs
        };
        let got = model.project(&inputs.data).unwrap();
        assert_eq!(got.batch, inputs.shape[0]);
        for out in outs.keys() {
            if out == "top_heads" {
                continue; // int64: tests/routed.rs
            }
            let want = bundle.golden_f32(name, out).unwrap().unwrap();
            // The verified bytes equal the file on disk, parsed the same way.
            let (_, from_disk) = npy::read_f32(&bundle.path(&outs[out]).unwrap()).unwrap();
            assert_eq!(want.data, from_disk);
            let have = match out.as_str() {
                "routing_weights" => got.routing_weights.clone().unwrap(),
                "top_weights" => got.routed.as_ref().unwrap().top_weights.clone(),
                "neglected_mass_bound" | "neglected_mass_estimate" => got.routed.as_ref().unwrap().neglected_mass.clone(),
                _ => got.projected.clone(),
            };
            assert_eq!(have.len(), want.data.len(), "{name}.{out} length");
            let diff = have.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff <= 1e-5, "{name}.{out}: max abs diff {diff} > 1e-5");
            checked += 1;
        }
    }
    assert!(checked >= 2, "expected teacher outputs at least");
}

#[test]
fn single_query_equals_batch_row() {
    let Some(dir) = env() else { return };
    let bundle = Bundle::open(&dir).unwrap();
    let inputs = bundle.golden_inputs().unwrap().data;
    let d = bundle.dim();
    let model = bundle.student().unwrap_or(bundle.teacher());
    let all = model.project(&inputs[..3 * d]).unwrap();
    let one = model.project(&inputs[d..2 * d]).unwrap();
    let diff = one.projected.iter().zip(&all.projected[d..2 * d]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff <= 1e-5);
}

#[test]
fn bad_input_is_a_typed_error() {
    let Some(dir) = env() else { return };
    let bundle = Bundle::open(&dir).unwrap();
    let d = bundle.dim();
    let t = bundle.teacher();
    assert!(matches!(t.project(&vec![0.0; d + 1]), Err(Error::Input(_))));
    assert!(matches!(t.project(&[]), Err(Error::Input(_))));
    let mut q = vec![0.1f32; d];
    q[3] = f32::NAN;
    assert!(matches!(t.project(&q), Err(Error::Input(m)) if m.contains("NaN")));
    let zero = t.project(&vec![0.0; d]).unwrap();
    assert!(zero.projected.iter().all(|x| x.is_finite()));
}

#[test]
fn tampered_file_is_refused_naming_it() {
    let Some(dir) = env() else { return };
    let copy = Scratch::copy_of(&dir, "tamper");
    let p = copy.path().join("teacher.onnx");
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    match Bundle::open(copy.path()) {
        Err(e @ Error::Checksum(_)) => assert!(e.to_string().contains("teacher.onnx"), "{e}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("tampered bundle opened"),
    }
}

#[test]
fn missing_file_wrong_schema_and_unsafe_paths() {
    let Some(dir) = env() else { return };
    let copy = Scratch::copy_of(&dir, "missing");
    std::fs::remove_file(copy.path().join("golden/inputs.npy")).unwrap();
    let e = Bundle::open(copy.path()).err().expect("opened without golden/inputs.npy");
    assert!(matches!(&e, Error::Missing { path, .. } if path == "golden/inputs.npy"), "{e}");
    // The io error underneath is reachable through source().
    assert!(std::error::Error::source(&e).is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()));

    let copy2 = Scratch::copy_of(&dir, "schema");
    edit_manifest(copy2.path(), |v| v["schema_version"] = 99.into());
    assert!(matches!(Bundle::open(copy2.path()), Err(Error::SchemaVersion { found: 99, .. })));

    for evil in ["../outside.onnx", "/etc/passwd", "golden/../../x"] {
        let copy3 = Scratch::copy_of(&dir, "evil");
        edit_manifest(copy3.path(), |v| v["files"][0]["path"] = evil.into());
        assert!(matches!(Bundle::open(copy3.path()), Err(Error::UnsafePath(p)) if p == evil), "{evil}");
    }
    #[cfg(unix)]
    {
        let copy4 = Scratch::copy_of(&dir, "symlink");
        let outside = Scratch::new("outside");
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        std::fs::remove_file(copy4.path().join("golden/inputs.npy")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), copy4.path().join("golden/inputs.npy")).unwrap();
        assert!(matches!(Bundle::open(copy4.path()), Err(Error::Symlink(p)) if p == "golden/inputs.npy"));
    }
}

#[test]
fn sessions_are_shared_across_threads() {
    let Some(dir) = env() else { return };
    let bundle = Arc::new(Bundle::open(&dir).unwrap());
    let d = bundle.dim();
    let inputs = bundle.golden_inputs().unwrap().data;
    let rows = inputs.len() / d;
    // Single-threaded reference, then 8 threads released together by a barrier, all in flight at once.
    let want = bundle.teacher().project(&inputs).unwrap().projected;
    let threads = 8;
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (b, start, inputs) = (Arc::clone(&bundle), Arc::clone(&start), inputs.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut got = Vec::new();
                for k in 0..200 {
                    let r = (t + k) % rows;
                    let model = if k % 2 == 0 { b.teacher() } else { b.student().unwrap_or(b.teacher()) };
                    let out = model.project(&inputs[r * d..(r + 1) * d]).unwrap();
                    if model.name == "teacher" {
                        got.push((r, out.projected));
                    }
                }
                got
            })
        })
        .collect(); // every thread is spawned before any is joined
    for h in handles {
        for (r, out) in h.join().unwrap() {
            let diff = out.iter().zip(&want[r * d..(r + 1) * d]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff <= 1e-6, "row {r}: {diff}");
        }
    }
}
