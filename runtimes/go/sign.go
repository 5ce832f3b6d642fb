package h2l

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// Signature errors: every refusal wraps ErrSignature and one of the specific kinds below.
var (
	ErrSignature       = errors.New("signature check failed")
	ErrNoSignature     = errors.New("bundle is not signed (no manifest.sig)")
	ErrWrongKey        = errors.New("signed by another key")
	ErrManifestChanged = errors.New("manifest changed after signing")
	ErrSignatureFormat = errors.New("malformed manifest.sig")
	ErrPublicKey       = errors.New("bad public key")
)

const (
	signatureFormatName  = "h2l-signature"
	signatureAlgorithmID = "ed25519"
)

// SignatureFile is manifest.sig: an ed25519 signature over the exact bytes of manifest.json.
type SignatureFile struct {
	Format    string `json:"format"`
	Version   int    `json:"version"`
	Algorithm string `json:"algorithm"`
	KeyID     string `json:"key_id"`
	Signature string `json:"signature"`
}

// KeyID is the fingerprint manifest.sig names: the sha256 hex of the 32 raw public-key bytes.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

// ParsePublicKey reads a PEM "PUBLIC KEY" (SubjectPublicKeyInfo) holding an ed25519 key (KEY.pub).
func ParsePublicKey(pemBytes []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, wrap(ErrPublicKey, "no PEM \"PUBLIC KEY\" block (pass the KEY.pub that h2l keygen wrote)")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, wrap(ErrPublicKey, "%w", err)
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, wrap(ErrPublicKey, "%T is not an ed25519 key", key)
	}
	return pub, nil
}

// LoadPublicKey reads and parses a KEY.pub file.
func LoadPublicKey(p string) (ed25519.PublicKey, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, wrap(ErrPublicKey, "%s: %w", p, err)
	}
	return ParsePublicKey(raw)
}

func sigErr(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %w: "+format, append([]any{ErrSignature, kind}, args...)...)
}

// verifySignature checks sigRaw (manifest.sig) over manifest, the exact bytes read, against key.
func verifySignature(manifest, sigRaw []byte, key ed25519.PublicKey) error {
	var s SignatureFile
	if err := json.Unmarshal(sigRaw, &s); err != nil {
		return sigErr(ErrSignatureFormat, "%v", err)
	}
	if s.Format != signatureFormatName || s.Version != 1 || s.Algorithm != signatureAlgorithmID {
		return sigErr(ErrSignatureFormat, "format %q version %d algorithm %q (want %s 1 %s)", s.Format, s.Version, s.Algorithm, signatureFormatName, signatureAlgorithmID)
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return sigErr(ErrSignatureFormat, "signature is not %d bytes of standard base64", ed25519.SignatureSize)
	}
	if want := KeyID(key); s.KeyID != want {
		return sigErr(ErrWrongKey, "manifest.sig names key %.16s…, the pinned key is %.16s…", s.KeyID, want)
	}
	if !ed25519.Verify(key, manifest, sig) {
		return sigErr(ErrManifestChanged, "the signature does not match manifest.json's bytes")
	}
	return nil
}
