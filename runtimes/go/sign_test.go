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
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// testKey is a seeded ed25519 key (same seed, same key: the tests are reproducible).
func testKey(t testing.TB, seed string) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	s := sha256.Sum256([]byte(seed))
	priv := ed25519.NewKeyFromSeed(s[:])
	return priv.Public().(ed25519.PublicKey), priv
}

func pubPEM(t testing.TB, pub ed25519.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// signDir writes manifest.sig as h2l sign does: ed25519 over the exact bytes of manifest.json.
func signDir(t testing.TB, dir string, priv ed25519.PrivateKey) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	must(t, err)
	writeJSON(t, filepath.Join(dir, "manifest.sig"), SignatureFile{
		Format: "h2l-signature", Version: 1, Algorithm: "ed25519",
		KeyID:     KeyID(priv.Public().(ed25519.PublicKey)),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(priv, raw)),
	})
}

// rehash sets the manifest's sha256 and bytes for rel to the file's current content.
func rehash(t testing.TB, dir, rel string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
	must(t, err)
	sum := sha256.Sum256(data)
	found := false
	editManifest(t, dir, func(v map[string]any) {
		for _, f := range v["files"].([]any) {
			e := f.(map[string]any)
			if e["path"] == rel {
				e["sha256"], e["bytes"], found = hex.EncodeToString(sum[:]), len(data), true
			}
		}
	})
	if !found {
		t.Fatalf("%s is not in the manifest", rel)
	}
}

func TestSignedBundleOpens(t *testing.T) {
	dir := copyDir(t, bundleDir(t))
	pub, priv := testKey(t, "owner")
	signDir(t, dir, priv)
	parsed, err := ParsePublicKey(pubPEM(t, pub))
	must(t, err)
	b, err := OpenVerified(dir, parsed)
	must(t, err)
	defer func() { must(t, b.Close()) }()
	inputs, _, err := b.Golden()
	must(t, err)
	got, err := b.Teacher().Project(inputs)
	must(t, err)
	diffs, err := b.GoldenDiff("teacher", got)
	must(t, err)
	if diffs["projected_embedding"] > 1e-5 {
		t.Fatalf("signed bundle's teacher differs from golden: %v", diffs)
	}
	if _, err := ParsePublicKey([]byte("not a key")); !errors.Is(err, ErrPublicKey) {
		t.Errorf("garbage key: %v", err)
	}
	if _, err := OpenVerified(dir, nil); !errors.Is(err, ErrPublicKey) {
		t.Errorf("nil key must not fall back to unsigned: %v", err)
	}
}

func TestSignatureRefusals(t *testing.T) {
	src := bundleDir(t)
	pub, priv := testKey(t, "owner")
	_, other := testKey(t, "someone else")
	cases := []struct {
		name string
		prep func(dir string)
		want error
	}{
		{"missing signature", func(dir string) {}, ErrNoSignature},
		{"another key", func(dir string) { signDir(t, dir, other) }, ErrWrongKey},
		{"manifest changed after signing", func(dir string) {
			signDir(t, dir, priv)
			editManifest(t, dir, func(v map[string]any) { v["name"] = "renamed" })
		}, ErrManifestChanged},
		{"model swapped and manifest rehashed after signing", func(dir string) {
			signDir(t, dir, priv)
			data, err := os.ReadFile(filepath.Join(dir, "student.onnx"))
			must(t, err)
			data[len(data)/2] ^= 1
			must(t, os.WriteFile(filepath.Join(dir, "student.onnx"), data, 0o644))
			rehash(t, dir, "student.onnx")
		}, ErrManifestChanged},
		{"another key claiming the pinned key id", func(dir string) {
			signDir(t, dir, other)
			p := filepath.Join(dir, "manifest.sig")
			v := readJSON(t, p)
			v["key_id"] = KeyID(pub)
			writeJSON(t, p, v)
		}, ErrManifestChanged},
		{"malformed signature", func(dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "manifest.sig"), []byte("{\"format\": 1"), 0o644))
		}, ErrSignatureFormat},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, src)
			c.prep(dir)
			b, err := OpenVerified(dir, pub)
			if err == nil {
				must(t, b.Close())
				t.Fatal("opened")
			}
			if !errors.Is(err, ErrSignature) || !errors.Is(err, c.want) {
				t.Fatalf("want %v, got %v", c.want, err)
			}
		})
	}
}

// externalize rewrites the ONNX file so its first initializer is stored as external data at location.
func externalize(t testing.TB, model []byte, location string) []byte {
	t.Helper()
	var out []byte
	done := false
	rebuild := func(b []byte, onField func(num protowire.Number, typ protowire.Type, val []byte, raw []byte) []byte) []byte {
		var res []byte
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				t.Fatal("bad protobuf")
			}
			m := protowire.ConsumeFieldValue(num, typ, b[n:])
			if m < 0 {
				t.Fatal("bad protobuf")
			}
			raw := b[:n+m]
			var val []byte
			if typ == protowire.BytesType {
				val, _ = protowire.ConsumeBytes(b[n:])
			}
			res = append(res, onField(num, typ, val, raw)...)
			b = b[n+m:]
		}
		return res
	}
	entry := func(k, v string) []byte {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		return protowire.AppendString(e, v)
	}
	out = rebuild(model, func(num protowire.Number, typ protowire.Type, graph []byte, raw []byte) []byte {
		if num != 7 || typ != protowire.BytesType {
			return raw
		}
		g := rebuild(graph, func(num protowire.Number, typ protowire.Type, tensor []byte, raw []byte) []byte {
			if num != 5 || typ != protowire.BytesType || done {
				return raw
			}
			done = true
			size := 0
			tb := rebuild(tensor, func(num protowire.Number, typ protowire.Type, val []byte, raw []byte) []byte {
				if num == 9 || num == 4 { // raw_data, float_data
					size += len(val)
					return nil
				}
				return raw
			})
			for _, kv := range [][2]string{{"location", location}, {"offset", "0"}, {"length", strconv.Itoa(size)}} {
				tb = protowire.AppendTag(tb, 13, protowire.BytesType)
				tb = protowire.AppendBytes(tb, entry(kv[0], kv[1]))
			}
			tb = protowire.AppendTag(tb, 14, protowire.VarintType)
			tb = protowire.AppendVarint(tb, 1)
			return protowire.AppendBytes(protowire.AppendTag(nil, 5, protowire.BytesType), tb)
		})
		return protowire.AppendBytes(protowire.AppendTag(nil, 7, protowire.BytesType), g)
	})
	if !done {
		t.Fatal("no initializer to externalize")
	}
	return out
}

// Hostile bundles: each has correct sha256 values and a valid signature, so the refusal comes from the
// defence under test, not from the hash or signature check.
func TestHostileBundles(t *testing.T) {
	src := bundleDir(t)
	pub, priv := testKey(t, "owner")
	hostile := func(t *testing.T, prep func(dir string)) error {
		dir := copyDir(t, src)
		prep(dir)
		signDir(t, dir, priv)
		b, err := OpenVerified(dir, pub)
		if err == nil {
			must(t, b.Close())
			t.Fatal("hostile bundle opened")
		}
		if errors.Is(err, ErrSignature) || errors.Is(err, ErrChecksum) {
			t.Fatalf("refused by the signature/hash check, not the defence under test: %v", err)
		}
		return err
	}
	expect := func(t *testing.T, err, kind error, text string) {
		t.Helper()
		if !errors.Is(err, kind) || !strings.Contains(err.Error(), text) {
			t.Fatalf("want %v mentioning %q, got %v", kind, text, err)
		}
	}
	t.Run("external data outside the folder", func(t *testing.T) {
		secret := filepath.Join(t.TempDir(), "secret.bin")
		must(t, os.WriteFile(secret, make([]byte, 4096), 0o644))
		err := hostile(t, func(dir string) {
			data, err := os.ReadFile(filepath.Join(dir, "teacher.onnx"))
			must(t, err)
			rel, err := filepath.Rel(dir, secret)
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, "teacher.onnx"), externalize(t, data, rel), 0o644))
			rehash(t, dir, "teacher.onnx")
		})
		expect(t, err, ErrExternalData, "outside the bundle")
	})
	t.Run("external data inside but unlisted", func(t *testing.T) {
		err := hostile(t, func(dir string) {
			data, err := os.ReadFile(filepath.Join(dir, "teacher.onnx"))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, "weights.bin"), make([]byte, 4096), 0o644))
			must(t, os.WriteFile(filepath.Join(dir, "teacher.onnx"), externalize(t, data, "weights.bin"), 0o644))
			rehash(t, dir, "teacher.onnx")
		})
		expect(t, err, ErrExternalData, "not listed in the manifest")
	})
	t.Run("external data absolute path", func(t *testing.T) {
		err := hostile(t, func(dir string) {
			data, err := os.ReadFile(filepath.Join(dir, "teacher.onnx"))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(dir, "teacher.onnx"), externalize(t, data, "/etc/passwd"), 0o644))
			rehash(t, dir, "teacher.onnx")
		})
		expect(t, err, ErrExternalData, "outside the bundle")
	})
	t.Run("symlinked model outside", func(t *testing.T) {
		err := hostile(t, func(dir string) {
			outside := filepath.Join(t.TempDir(), "student.onnx")
			must(t, os.Rename(filepath.Join(dir, "student.onnx"), outside))
			must(t, os.Symlink(outside, filepath.Join(dir, "student.onnx")))
		})
		expect(t, err, ErrUnsafePath, "student.onnx")
	})
	t.Run("symlinked model inside", func(t *testing.T) {
		err := hostile(t, func(dir string) {
			must(t, os.Rename(filepath.Join(dir, "student.onnx"), filepath.Join(dir, "real.onnx")))
			must(t, os.Symlink("real.onnx", filepath.Join(dir, "student.onnx")))
		})
		expect(t, err, ErrUnsafePath, "symlink")
	})
	t.Run("100 MB manifest", func(t *testing.T) {
		err := hostile(t, func(dir string) {
			p := filepath.Join(dir, "manifest.json")
			raw, err := os.ReadFile(p)
			must(t, err)
			pad := make([]byte, 100<<20)
			for i := range pad {
				pad[i] = ' '
			}
			must(t, os.WriteFile(p, append(raw, pad...), 0o644)) // still valid JSON
		})
		expect(t, err, ErrManifest, "cap")
	})
	t.Run("deeply nested JSON", func(t *testing.T) {
		err := hostile(t, func(dir string) {
			p := filepath.Join(dir, "manifest.json")
			raw, err := os.ReadFile(p)
			must(t, err)
			deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
			raw = append([]byte(`{"nested": `+deep+`, `), raw[1:]...)
			must(t, os.WriteFile(p, raw, 0o644))
		})
		expect(t, err, ErrManifest, "deeper")
	})
	t.Run("truncated ONNX", func(t *testing.T) {
		err := hostile(t, func(dir string) {
			p := filepath.Join(dir, "student.onnx")
			data, err := os.ReadFile(p)
			must(t, err)
			must(t, os.WriteFile(p, data[:len(data)/2], 0o644))
			rehash(t, dir, "student.onnx")
		})
		expect(t, err, ErrModel, "student.onnx")
	})
	t.Run("not ONNX", func(t *testing.T) {
		err := hostile(t, func(dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "student.onnx"), []byte("{\"not\": \"onnx\"}"), 0o644))
			rehash(t, dir, "student.onnx")
		})
		expect(t, err, ErrModel, "student.onnx")
	})
}

// Wrong types in every manifest field the runtime reads: each node of the real manifest in turn gets a
// value of another JSON type (numbers and strings become true, booleans, objects and arrays a string).
// Free-form objects (architecture, source_check, verification's summary and check items) are replaced
// whole, not entered. Every variant is signed with correct hashes and must be refused as a manifest error.
func TestWrongTypesInEveryManifestField(t *testing.T) {
	src := bundleDir(t)
	pub, priv := testKey(t, "owner")
	raw, err := os.ReadFile(filepath.Join(src, "manifest.json"))
	must(t, err)
	var paths [][]any
	var walk func(v any, at []any)
	walk = func(v any, at []any) {
		if len(at) > 0 {
			paths = append(paths, append([]any(nil), at...))
		}
		last := ""
		if len(at) > 0 {
			last = fmt.Sprint(at[len(at)-1])
		}
		freeForm := last == "architecture" || last == "source_check" || last == "summary"
		if len(at) >= 3 && (fmt.Sprint(at[len(at)-2]) == "checks" || fmt.Sprint(at[len(at)-2]) == "skipped") || freeForm {
			return
		}
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				walk(c, append(at, k))
			}
		case []any:
			for i, c := range x {
				walk(c, append(at, i))
			}
		}
	}
	var doc map[string]any
	must(t, json.Unmarshal(raw, &doc))
	walk(doc, nil)
	if len(paths) < 50 {
		t.Fatalf("only %d fields found", len(paths))
	}
	dir := copyDir(t, src)
	for _, at := range paths {
		var v map[string]any
		must(t, json.Unmarshal(raw, &v))
		var parent any = v
		for _, k := range at[:len(at)-1] {
			switch p := parent.(type) {
			case map[string]any:
				parent = p[k.(string)]
			case []any:
				parent = p[k.(int)]
			}
		}
		set := func(old any) any {
			switch old.(type) {
			case float64, string:
				return true
			default:
				return "wrong type"
			}
		}
		switch p := parent.(type) {
		case map[string]any:
			k := at[len(at)-1].(string)
			p[k] = set(p[k])
		case []any:
			i := at[len(at)-1].(int)
			p[i] = set(p[i])
		}
		writeJSON(t, filepath.Join(dir, "manifest.json"), v)
		signDir(t, dir, priv)
		b, err := OpenVerified(dir, pub)
		if err == nil {
			must(t, b.Close())
			t.Errorf("%v: a wrong type opened", at)
			continue
		}
		if !errors.Is(err, ErrManifest) && !errors.Is(err, ErrSchemaVersion) {
			t.Errorf("%v: want a manifest error, got %v", at, err)
		}
	}
	t.Logf("%d fields checked", len(paths))
}
