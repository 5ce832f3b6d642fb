package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	h2l "github.com/h2l-dev/h2l/runtimes/go"
)

func bundle(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("H2L_BUNDLE")
	if dir == "" || os.Getenv("ORT_DYLIB_PATH") == "" {
		t.Skip("H2L_BUNDLE and ORT_DYLIB_PATH are not set")
	}
	return dir
}

// copyBundle copies the bundle's regular files (two levels: root and golden/, reports/).
func copyBundle(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "bundle")
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func writeKey(t *testing.T, seed string) (string, ed25519.PrivateKey) {
	t.Helper()
	s := sha256.Sum256([]byte(seed))
	priv := ed25519.NewKeyFromSeed(s[:])
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "KEY.pub")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p, priv
}

func sign(t *testing.T, dir string, priv ed25519.PrivateKey) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := json.Marshal(h2l.SignatureFile{Format: "h2l-signature", Version: 1, Algorithm: "ed25519",
		KeyID: h2l.KeyID(priv.Public().(ed25519.PublicKey)), Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(priv, raw))})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.sig"), sig, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPublicKeyFlag(t *testing.T) {
	dir := copyBundle(t, bundle(t))
	keyFile, priv := writeKey(t, "owner")
	var out, errOut bytes.Buffer
	err := run([]string{"--public-key", keyFile, dir}, &out, &errOut)
	if code := exitCode(err); code != 5 || !strings.Contains(err.Error(), "not signed") {
		t.Fatalf("unsigned bundle: exit %d, %v", code, err)
	}
	sign(t, dir, priv)
	out.Reset()
	if err := run([]string{"--public-key", keyFile, dir}, &out, &errOut); err != nil || !strings.Contains(out.String(), "teacher.projected_embedding") {
		t.Fatalf("signed bundle: %v\n%s", err, out.String())
	}
	otherKey, _ := writeKey(t, "someone else")
	err = run([]string{"--public-key", otherKey, dir}, &out, &errOut)
	if code := exitCode(err); code != 5 || !strings.Contains(err.Error(), "another key") {
		t.Fatalf("another key: exit %d, %v", code, err)
	}
	err = run([]string{"--public-key", filepath.Join(t.TempDir(), "missing.pub"), dir}, &out, &errOut)
	if code := exitCode(err); code != 3 {
		t.Fatalf("missing key file: exit %d, %v", code, err)
	}
	if code := exitCode(run([]string{}, &out, &errOut)); code != 2 {
		t.Fatalf("no bundle: exit %d", code)
	}
}
