//! Signed bundles and hostile bundles (issue 15).  The tests make their own ed25519 keys (fixed seeds)
//! and signed or hostile copies of H2L_BUNDLE.  Every hostile bundle carries correct sha256 values and a
//! valid signature, so each refusal comes from the defence under test, not from the hash check.

mod common;

use std::path::Path;
use std::process::Command;

use common::{edit_manifest, env, public_key, publish, replace_file, sign, write_public_key, Scratch};
use h2l_runtime::onnx::write;
use h2l_runtime::reload::Reload;
use h2l_runtime::{Bundle, Error, OpenOptions, Reloader};

const KEY: u8 = 1;
const OTHER: u8 = 2;

fn signed_copy(src: &Path, tag: &str) -> Scratch {
    let s = Scratch::copy_of(src, tag);
    sign(s.path(), KEY);
    s
}

/// Open with the pinned key and without one; both must refuse, and the signed open's error is returned.
fn refused(dir: &Path) -> Error {
    let plain = Bundle::open(dir);
    assert!(plain.is_err(), "{} opened without a key", dir.display());
    match Bundle::open_verified(dir, &public_key(KEY)) {
        Ok(_) => panic!("hostile bundle {} opened", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn a_signed_bundle_opens_and_says_who_signed_it() {
    let Some(dir) = env() else { return };
    let s = signed_copy(&dir, "signed");
    let b = Bundle::open_verified(s.path(), &public_key(KEY)).unwrap();
    assert_eq!(b.signed_by(), Some(public_key(KEY).key_id()));
    assert!(Bundle::open(s.path()).unwrap().signed_by().is_none());
}

#[test]
fn the_three_refusals() {
    let Some(dir) = env() else { return };
    let unsigned = Scratch::copy_of(&dir, "unsigned");
    assert!(matches!(Bundle::open_verified(unsigned.path(), &public_key(KEY)), Err(Error::SignatureMissing)));

    let other = Scratch::copy_of(&dir, "other");
    sign(other.path(), OTHER);
    let e = Bundle::open_verified(other.path(), &public_key(KEY)).err().unwrap();
    assert!(matches!(&e, Error::SignatureWrongKey { found, .. } if found == public_key(OTHER).key_id()), "{e}");

    // Changed after signing: a consistent new manifest (a re-hashed model) under the old signature.
    let changed = signed_copy(&dir, "changed");
    let mut model = std::fs::read(changed.path().join("teacher.onnx")).unwrap();
    write::uint(&mut model, 99, 1); // an unknown field: still a valid model
    replace_file(changed.path(), "teacher.onnx", &model);
    assert!(Bundle::open(changed.path()).is_ok(), "unsigned open trusts a consistent manifest");
    assert!(matches!(Bundle::open_verified(changed.path(), &public_key(KEY)), Err(Error::SignatureInvalid)));
}

#[test]
fn h2l_rs_public_key_exit_codes() {
    let Some(dir) = env() else { return };
    let keys = Scratch::new("keys");
    let (pub1, pub2) = (write_public_key(keys.path(), KEY), write_public_key(keys.path(), OTHER));
    let s = signed_copy(&dir, "cli");
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_h2l-rs")).args(args).output().unwrap();
    let bundle = s.path().to_str().unwrap();
    let ok = run(&["--public-key", pub1.to_str().unwrap(), bundle]);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let first: serde_json::Value = serde_json::from_slice(ok.stdout.split(|&c| c == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["signed_by"], public_key(KEY).key_id());
    let wrong = run(&["--public-key", pub2.to_str().unwrap(), bundle]);
    assert_eq!(wrong.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&wrong.stderr).starts_with("error: manifest.sig is signed by key"));
    std::fs::remove_file(s.path().join("manifest.sig")).unwrap();
    let missing = run(&["--public-key", pub1.to_str().unwrap(), bundle]);
    assert_eq!(missing.status.code(), Some(5));
    assert_eq!(run(&[bundle]).status.code(), Some(0), "no key configured: unsigned opens");
    for usage in [&[][..], &["--public-key"], &["--bench", "x", bundle], &["--frobnicate", bundle], &[bundle, bundle]] {
        let out = run(usage);
        assert_eq!(out.status.code(), Some(2), "{usage:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout.is_empty());
    }
    assert_eq!(run(&["--public-key", "/nonexistent.pub", bundle]).status.code(), Some(3));
}

#[test]
fn reload_rechecks_the_signature_before_it_swaps() {
    let Some(dir) = env() else { return };
    let root = Scratch::new("signed-reload");
    let live = root.path().join("live");
    let first = signed_copy(&dir, "v1");
    publish(&live, first.path(), "0", false);
    let reloader = Reloader::open(&live, OpenOptions::new().public_key(public_key(KEY))).unwrap();
    let sha = reloader.current().manifest_sha256().to_string();

    // A consistent but unsigned (then other-key) republish is refused; the service keeps the signed one.
    let next = Scratch::copy_of(&dir, "v2");
    edit_manifest(next.path(), |v| v["name"] = "republished".into());
    publish(&live, next.path(), "1", true);
    assert!(matches!(reloader.check(), Err(Error::SignatureMissing)));
    sign(next.path(), OTHER);
    publish(&live, next.path(), "2", true);
    assert!(matches!(reloader.check(), Err(Error::SignatureWrongKey { .. })));
    assert_eq!(reloader.current().manifest_sha256(), sha);
    sign(next.path(), KEY);
    publish(&live, next.path(), "3", true);
    assert!(matches!(reloader.check().unwrap(), Reload::Swapped { .. }));
    assert_eq!(reloader.current().manifest.name, "republished");
    assert_eq!(reloader.failures().0, 2);
}

/// teacher.onnx plus a second graph field holding one external-data initializer; protobuf merges
/// repeated message fields, so onnxruntime would see it as part of the graph.
fn with_external_initializer(model: &[u8], location: &str) -> Vec<u8> {
    let mut graph = Vec::new();
    write::bytes(&mut graph, 5, &write::external_tensor("stolen", 4, location));
    let mut out = model.to_vec();
    write::bytes(&mut out, 7, &graph);
    out
}

#[test]
fn hostile_external_data_outside_and_unlisted() {
    let Some(dir) = env() else { return };
    let model = std::fs::read(dir.join("teacher.onnx")).unwrap();
    let outside = Scratch::new("secret");
    std::fs::write(outside.path().join("secret.bin"), [7u8; 16]).unwrap();
    let out_rel = format!("../{}/secret.bin", outside.path().file_name().unwrap().to_str().unwrap());
    for (tag, location) in [("outside", out_rel.as_str()), ("abs", "/etc/passwd"), ("unlisted", "weights.bin")] {
        let s = Scratch::copy_of(&dir, tag);
        std::fs::write(s.path().join("weights.bin"), [7u8; 16]).unwrap(); // inside, not in the manifest
        replace_file(s.path(), "teacher.onnx", &with_external_initializer(&model, location));
        sign(s.path(), KEY);
        let e = refused(s.path());
        assert!(matches!(&e, Error::ExternalData { tensor, location: l, .. } if tensor == "stolen" && l == location), "{tag}: {e}");
        assert!(e.to_string().contains("outside the model file"), "{e}");
    }
}

#[cfg(unix)]
#[test]
fn hostile_symlinked_model() {
    let Some(dir) = env() else { return };
    let outside = Scratch::copy_of(&dir, "symlink-target");
    for (tag, target) in [("in", dir.join("teacher.onnx")), ("out", outside.path().join("teacher.onnx"))] {
        let s = Scratch::copy_of(&dir, tag);
        let target = if tag == "in" {
            std::fs::rename(s.path().join("teacher.onnx"), s.path().join("real.onnx")).unwrap();
            s.path().join("real.onnx")
        } else {
            std::fs::remove_file(s.path().join("teacher.onnx")).unwrap();
            target
        };
        std::os::unix::fs::symlink(&target, s.path().join("teacher.onnx")).unwrap();
        sign(s.path(), KEY); // same bytes behind the link: the sha256 still matches
        assert!(matches!(refused(s.path()), Error::Symlink(p) if p == "teacher.onnx"), "{tag}");
    }
}

#[test]
fn hostile_huge_and_deeply_nested_manifests() {
    let Some(dir) = env() else { return };
    let s = Scratch::copy_of(&dir, "huge");
    let mut m = std::fs::read(s.path().join("manifest.json")).unwrap();
    let close = m.iter().rposition(|&c| c == b'}').unwrap();
    let pad = format!(", \"padding\": \"{}\"}}", "x".repeat(100 << 20));
    m.truncate(close);
    m.extend(pad.as_bytes());
    std::fs::write(s.path().join("manifest.json"), &m).unwrap();
    sign(s.path(), KEY);
    drop(m);
    assert!(matches!(refused(s.path()), Error::TooLarge { what, size, .. } if what == "manifest.json" && size > 100 << 20));

    let s = Scratch::copy_of(&dir, "nested");
    edit_manifest(s.path(), |v| v["name"] = "NESTED".into());
    let text = std::fs::read_to_string(s.path().join("manifest.json")).unwrap();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    std::fs::write(s.path().join("manifest.json"), text.replace("\"NESTED\"", &deep)).unwrap();
    sign(s.path(), KEY);
    let e = refused(s.path());
    assert!(matches!(&e, Error::Manifest { .. }) && e.to_string().contains("recursion limit"), "{e}");
}

#[test]
fn hostile_truncated_and_non_onnx_models() {
    let Some(dir) = env() else { return };
    let model = std::fs::read(dir.join("teacher.onnx")).unwrap();
    let mut zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec();
    zip.extend([0u8; 64]);
    let mut claims_huge = Vec::new();
    write::varint(&mut claims_huge, 7 << 3 | 2);
    write::varint(&mut claims_huge, 1 << 40); // a graph "of 1 TiB" in a 10-byte file
    for (tag, bytes) in [("half", model[..model.len() / 2].to_vec()), ("zip", zip), ("claims", claims_huge)] {
        let s = Scratch::copy_of(&dir, tag);
        replace_file(s.path(), "teacher.onnx", &bytes);
        sign(s.path(), KEY);
        let e = refused(s.path());
        assert!(matches!(&e, Error::Onnx { file, .. } if file == "teacher.onnx"), "{tag}: {e}");
    }
}

/// Every node under the manifest fields this runtime reads, with its serde path ("teacher.dim",
/// "files[0].sha256"), so each can be given a wrong type.
fn nodes(v: &serde_json::Value, path: String, out: &mut Vec<(String, Vec<String>)>, keys: &mut Vec<String>) {
    out.push((path.clone(), keys.clone()));
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                keys.push(k.clone());
                nodes(child, if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, out, keys);
                keys.pop();
            }
        }
        serde_json::Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                keys.push(i.to_string());
                nodes(child, format!("{path}[{i}]"), out, keys);
                keys.pop();
            }
        }
        _ => {}
    }
}

fn wrong_type(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::{json, Value};
    match v {
        Value::String(_) => json!(12345),
        Value::Number(_) => json!("not a number"),
        Value::Bool(_) | Value::Null => json!("not a bool"),
        Value::Array(_) => json!({"x": 1}),
        Value::Object(_) => json!([1, 2]),
    }
}

#[test]
fn hostile_wrong_types_in_every_field_read() {
    let Some(dir) = env() else { return };
    let s = Scratch::copy_of(&dir, "types");
    let original: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut all = Vec::new();
    let read = ["schema_version", "format", "h2l_version", "name", "teacher", "models", "golden", "files"];
    for top in read {
        let mut keys = vec![top.to_string()];
        nodes(&original[top], top.to_string(), &mut all, &mut keys);
    }
    let model_fields = ["file", "role", "inputs", "outputs"];
    // Skip what this runtime never reads: other keys of a model entry, and golden.rows.
    let unread_model_key = |k: &[String]| k[0] == "models" && k.len() > 2 && !model_fields.contains(&k[2].as_str());
    let golden_rows = |k: &[String]| k[0] == "golden" && k.len() > 1 && k[1] == "rows";
    all.retain(|(_, keys)| !unread_model_key(keys) && !golden_rows(keys));
    assert!(all.len() > 50, "walked {} fields", all.len());
    let mut by_variant = std::collections::BTreeMap::<String, usize>::new();
    for (path, keys) in &all {
        let mut v = original.clone();
        let mut node = &mut v;
        for k in keys {
            node = match node {
                serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
                other => &mut other[k.as_str()],
            };
        }
        *node = wrong_type(node);
        std::fs::write(s.path().join("manifest.json"), serde_json::to_vec(&v).unwrap()).unwrap();
        sign(s.path(), KEY);
        let e = match Bundle::open_verified(s.path(), &public_key(KEY)) {
            Ok(_) => panic!("{path}: a wrong type opened"),
            Err(e) => e,
        };
        if let Error::Manifest { .. } = &e {
            // serde names the field; a container swapped whole is named by its own path.
            assert!(e.to_string().contains(path.as_str()) || !e.to_string().contains("invalid type"), "{path}: {e}");
        }
        let variant = format!("{e:?}").split([' ', '(', '{']).next().unwrap().to_string();
        *by_variant.entry(variant).or_default() += 1;
    }
    println!("{} wrong-type manifests refused: {by_variant:?}", all.len());
}
