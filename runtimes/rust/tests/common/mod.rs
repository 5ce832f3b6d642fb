//! Helpers shared by the integration tests: the environment they run against and scratch copies.
//! H2L_BUNDLE: the bundle folder; ORT_DYLIB_PATH: libonnxruntime.so.1.x.
//! Unset: the tests print why and pass vacuously (cargo has no skip); set but wrong: they fail.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::SigningKey;
use h2l_runtime::PublicKey;

pub fn env() -> Option<PathBuf> {
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

/// A second bundle (another teacher) from H2L_BUNDLE_B; None, with the reason printed, when unset.
pub fn env_b(test: &str) -> Option<PathBuf> {
    match std::env::var_os("H2L_BUNDLE_B") {
        Some(b) => {
            let b = PathBuf::from(b);
            assert!(b.join("manifest.json").is_file(), "H2L_BUNDLE_B={} has no manifest.json", b.display());
            Some(b)
        }
        None => {
            eprintln!("skipped {test}: H2L_BUNDLE_B is not set (the pytest driver makes a second bundle with another teacher)");
            None
        }
    }
}

pub fn copy_dir(src: &Path, dst: &Path) {
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

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh scratch folder under the temp dir, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("h2l-rs-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    /// A scratch copy of bundle `src`.
    pub fn copy_of(src: &Path, tag: &str) -> Scratch {
        let s = Scratch::new(tag);
        copy_dir(src, &s.0);
        s
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Replace `rel` in `dir` by `bytes` and update its sha256/size in the manifest, so only a content
/// defence (not the hash check) can refuse it.
pub fn replace_file(dir: &Path, rel: &str, bytes: &[u8]) {
    std::fs::write(dir.join(rel), bytes).unwrap();
    let (sha, len) = (sha256_hex(bytes), bytes.len());
    edit_manifest(dir, |v| {
        for f in v["files"].as_array_mut().unwrap() {
            if f["path"] == rel {
                f["sha256"] = sha.clone().into();
                f["bytes"] = len.into();
            }
        }
    });
}

/// A deterministic test key (seed byte repeated).
pub fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn public_key(seed: u8) -> PublicKey {
    let pem = signing_key(seed).verifying_key().to_public_key_pem(Default::default()).unwrap();
    PublicKey::from_pem(&pem).unwrap()
}

/// Write `dir/KEY.pub` for `seed` as `h2l keygen` does (PEM SubjectPublicKeyInfo); returns its path.
pub fn write_public_key(dir: &Path, seed: u8) -> PathBuf {
    let pem = signing_key(seed).verifying_key().to_public_key_pem(Default::default()).unwrap();
    let p = dir.join(format!("key{seed}.pub"));
    std::fs::write(&p, pem).unwrap();
    p
}

/// Sign `dir/manifest.json` as it is now with key `seed` (writes manifest.sig).
pub fn sign(dir: &Path, seed: u8) {
    let m = std::fs::read(dir.join("manifest.json")).unwrap();
    std::fs::write(dir.join("manifest.sig"), h2l_runtime::signature::sign(&signing_key(seed), &m)).unwrap();
}

/// Republish `src` at `live` the way `h2l export --force` does: build a staging copy beside it, then
/// either rename the old folder aside, rename the new one in and delete the old (`exchange = false`),
/// or swap the two atomically with renameat2(RENAME_EXCHANGE) and delete the old (`exchange = true`).
pub fn publish(live: &Path, src: &Path, tag: &str, exchange: bool) {
    let parent = live.parent().unwrap();
    let name = live.file_name().unwrap().to_str().unwrap();
    let stage = parent.join(format!(".{name}.{tag}.partial"));
    let aside = parent.join(format!(".{name}.{tag}.old"));
    copy_dir(src, &stage);
    if !live.exists() {
        std::fs::rename(&stage, live).unwrap();
        return;
    }
    if exchange {
        rename_exchange(&stage, live);
        std::fs::rename(&stage, &aside).unwrap();
    } else {
        std::fs::rename(live, &aside).unwrap();
        std::fs::rename(&stage, live).unwrap();
    }
    std::fs::remove_dir_all(&aside).unwrap();
}

#[cfg(target_os = "linux")]
fn rename_exchange(a: &Path, b: &Path) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (ca, cb) = (CString::new(a.as_os_str().as_bytes()).unwrap(), CString::new(b.as_os_str().as_bytes()).unwrap());
    // SAFETY: two NUL-terminated paths; AT_FDCWD.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
}

#[cfg(not(target_os = "linux"))]
fn rename_exchange(a: &Path, b: &Path) {
    let tmp = b.with_extension("swap");
    std::fs::rename(b, &tmp).unwrap();
    std::fs::rename(a, b).unwrap();
    std::fs::rename(&tmp, a).unwrap();
}

/// p-th percentile (0..=100) of unsorted samples.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[i]
}
