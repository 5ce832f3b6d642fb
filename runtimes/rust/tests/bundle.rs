//! Integration tests against a bundle made by the Python CLI in the same CI run.
//! H2L_BUNDLE: the bundle folder; ORT_DYLIB_PATH: libonnxruntime.so.1.x.
//! Unset: the tests print why and pass vacuously (cargo has no skip); set but wrong: they fail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use h2l_runtime::{npy, Bundle, Error};

fn env() -> Option<PathBuf> {
    let bundle = std::env::var_os("H2L_BUNDLE");
    let lib = std::env::var_os("ORT_DYLIB_PATH");
    match (bundle, lib) {
        (Some(b), Some(l)) => {
            let b = PathBuf::from(b);
            assert!(b.join("manifest.json").is_file(), "H2L_BUNDLE={} has no manifest.json", b.display());
            assert!(Path::new(&l).is_file(), "ORT_DYLIB_PATH={} is not a file", Path::new(&l).display());
            Some(b)
        }
        (b, l) => {
            assert!(b.is_none() && l.is_none(), "set both H2L_BUNDLE and ORT_DYLIB_PATH, or neither");
            eprintln!("skipped: H2L_BUNDLE and ORT_DYLIB_PATH are not set");
            None
        }
    }
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

fn scratch(src: &Path, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("h2l-rs-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(src, &dir);
    dir
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn golden_vectors_match_python() {
    let Some(dir) = env() else { return };
    let bundle = Bundle::open(&dir).expect("open bundle");
    let (shape, inputs) = npy::read_f32(&bundle.path(&bundle.manifest.golden.inputs).unwrap()).unwrap();
    assert_eq!(shape[1], bundle.dim());
    let mut checked = 0;
    for (name, outs) in &bundle.manifest.golden.outputs {
        let got = bundle.model(name).unwrap().project(&inputs).unwrap();
        assert_eq!(got.batch, shape[0]);
        for (out, rel) in outs {
            let (_, want) = npy::read_f32(&bundle.path(rel).unwrap()).unwrap();
            let have = if out == "routing_weights" { got.routing_weights.clone().unwrap() } else { got.projected.clone() };
            assert_eq!(have.len(), want.len(), "{name}.{out} length");
            let diff = have.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
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
    let (_, inputs) = npy::read_f32(&bundle.path(&bundle.manifest.golden.inputs).unwrap()).unwrap();
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
    let copy = scratch(&dir, "tamper");
    let p = copy.join("teacher.onnx");
    let mut bytes = std::fs::read(&p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    match Bundle::open(&copy) {
        Err(e @ Error::Checksum(_)) => assert!(e.to_string().contains("teacher.onnx"), "{e}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("tampered bundle opened"),
    }
    let _ = std::fs::remove_dir_all(copy);
}

#[test]
fn missing_file_wrong_schema_and_unsafe_paths() {
    let Some(dir) = env() else { return };
    let copy = scratch(&dir, "missing");
    std::fs::remove_file(copy.join("golden/inputs.npy")).unwrap();
    assert!(matches!(Bundle::open(&copy), Err(Error::Missing(p)) if p == "golden/inputs.npy"));

    let copy2 = scratch(&dir, "schema");
    edit_manifest(&copy2, |v| v["schema_version"] = 99.into());
    assert!(matches!(Bundle::open(&copy2), Err(Error::SchemaVersion { found: 99, .. })));

    for evil in ["../outside.onnx", "/etc/passwd", "golden/../../x"] {
        let copy3 = scratch(&dir, "evil");
        edit_manifest(&copy3, |v| v["files"][0]["path"] = evil.into());
        assert!(matches!(Bundle::open(&copy3), Err(Error::UnsafePath(p)) if p == evil), "{evil}");
    }
    #[cfg(unix)]
    {
        let copy4 = scratch(&dir, "symlink");
        let outside = std::env::temp_dir().join(format!("h2l-rs-outside-{}", std::process::id()));
        std::fs::write(&outside, b"secret").unwrap();
        std::fs::remove_file(copy4.join("golden/inputs.npy")).unwrap();
        std::os::unix::fs::symlink(&outside, copy4.join("golden/inputs.npy")).unwrap();
        assert!(matches!(Bundle::open(&copy4), Err(Error::UnsafePath(_))));
        let _ = std::fs::remove_file(outside);
        let _ = std::fs::remove_dir_all(copy4);
    }
    let _ = std::fs::remove_dir_all(copy);
    let _ = std::fs::remove_dir_all(copy2);
}

#[test]
fn sessions_are_shared_across_threads() {
    let Some(dir) = env() else { return };
    let bundle = Arc::new(Bundle::open(&dir).unwrap());
    let d = bundle.dim();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let b = Arc::clone(&bundle);
            std::thread::spawn(move || {
                let q = vec![0.01 * (i + 1) as f32; d];
                (0..20).map(|_| b.teacher().project(&q).unwrap().projected[0]).collect::<Vec<_>>()
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    for h in handles {
        assert!(h.windows(2).all(|w| w[0] == w[1]));
    }
}
