//! Signed bundles (issue 15): `manifest.sig` holds an ed25519 signature over the exact bytes of
//! manifest.json, and the manifest holds every file's sha256, so one signature covers the bundle.
//!
//! ```json
//! {"format":"h2l-signature","version":1,"algorithm":"ed25519",
//!  "key_id":"<sha256 hex of the 32 raw public-key bytes>","signature":"<base64 of 64 bytes>"}
//! ```

use std::path::Path;

use base64ct::{Base64, Encoding};
use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::folder::hex;

pub const SIGNATURE_FILE: &str = "manifest.sig";
pub const MAX_SIGNATURE_BYTES: u64 = 64 << 10;

/// A pinned ed25519 public key, from a PEM "PUBLIC KEY" (SubjectPublicKeyInfo) file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: String,
}

impl PublicKey {
    /// Read `KEY.pub` as written by `h2l keygen`.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<PublicKey> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| Error::PublicKey { path: shown.clone(), reason: e.to_string() })?;
        if meta.len() > MAX_SIGNATURE_BYTES {
            return Err(Error::PublicKey { path: shown, reason: "file is too large for a public key".into() });
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::PublicKey { path: shown.clone(), reason: e.to_string() })?;
        Self::from_pem(&text).map_err(|e| match e {
            Error::PublicKey { reason, .. } => Error::PublicKey { path: shown, reason },
            other => other,
        })
    }

    /// Parse PEM text ("-----BEGIN PUBLIC KEY-----", ed25519 SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<PublicKey> {
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| Error::PublicKey { path: "<pem>".into(), reason: e.to_string() })?;
        Ok(Self::from_key(key))
    }

    pub fn from_key(key: VerifyingKey) -> PublicKey {
        let id = hex(&Sha256::digest(key.as_bytes()));
        PublicKey { key, id }
    }

    /// sha256 hex of the 32 raw key bytes: the `key_id` that manifest.sig names.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// Verify `sig_bytes` (the manifest.sig file) over `manifest` (the exact manifest.json bytes).
    pub fn verify(&self, manifest: &[u8], sig_bytes: &[u8]) -> Result<()> {
        let sig: SigFile = serde_json::from_slice(sig_bytes).map_err(|e| Error::SignatureMalformed(e.to_string()))?;
        if sig.format != "h2l-signature" || sig.version != 1 || sig.algorithm != "ed25519" {
            return Err(Error::SignatureMalformed(format!(
                "format {:?} version {} algorithm {:?}; expected \"h2l-signature\" 1 \"ed25519\"",
                sig.format, sig.version, sig.algorithm
            )));
        }
        if sig.key_id != self.id {
            return Err(Error::SignatureWrongKey { expected: self.id.clone(), found: sig.key_id });
        }
        let raw = Base64::decode_vec(sig.signature.trim())
            .map_err(|e| Error::SignatureMalformed(format!("signature is not base64: {e}")))?;
        let signature = Signature::from_slice(&raw)
            .map_err(|_| Error::SignatureMalformed(format!("signature is {} bytes, not 64", raw.len())))?;
        self.key.verify_strict(manifest, &signature).map_err(|_| Error::SignatureInvalid)
    }
}

#[derive(Deserialize)]
struct SigFile {
    format: String,
    version: u64,
    algorithm: String,
    key_id: String,
    signature: String,
}

/// The manifest.sig text for `manifest` signed with `key` (what `h2l sign` writes); for tests and tools.
pub fn sign(key: &ed25519_dalek::SigningKey, manifest: &[u8]) -> String {
    use ed25519_dalek::Signer;
    let sig = key.sign(manifest);
    serde_json::json!({
        "format": "h2l-signature",
        "version": 1,
        "algorithm": "ed25519",
        "key_id": hex(&Sha256::digest(key.verifying_key().as_bytes())),
        "signature": Base64::encode_string(&sig.to_bytes()),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePublicKey;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn pinned(seed: u8) -> PublicKey {
        let pem = key(seed).verifying_key().to_public_key_pem(Default::default()).unwrap();
        PublicKey::from_pem(&pem).unwrap()
    }

    #[test]
    fn sign_then_verify() {
        let m = br#"{"schema_version": 1}"#;
        pinned(7).verify(m, sign(&key(7), m).as_bytes()).unwrap();
    }

    #[test]
    fn the_three_refusals_are_distinct() {
        let m = br#"{"schema_version": 1}"#;
        let sig = sign(&key(7), m);
        assert!(matches!(pinned(8).verify(m, sig.as_bytes()), Err(Error::SignatureWrongKey { .. })));
        assert!(matches!(pinned(7).verify(br#"{"schema_version": 2}"#, sig.as_bytes()), Err(Error::SignatureInvalid)));
        assert!(matches!(pinned(7).verify(m, b"{}"), Err(Error::SignatureMalformed(_))));
        let mut v: serde_json::Value = serde_json::from_str(&sig).unwrap();
        v["signature"] = "AAAA".into();
        assert!(matches!(pinned(7).verify(m, v.to_string().as_bytes()), Err(Error::SignatureMalformed(_))));
        v["algorithm"] = "rsa".into();
        assert!(matches!(pinned(7).verify(m, v.to_string().as_bytes()), Err(Error::SignatureMalformed(_))));
    }

    #[test]
    fn key_id_is_sha256_of_raw_key() {
        let k = pinned(3);
        assert_eq!(k.key_id(), hex(&Sha256::digest(key(3).verifying_key().as_bytes())));
        assert!(matches!(PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"), Err(Error::PublicKey { .. })));
    }
}
