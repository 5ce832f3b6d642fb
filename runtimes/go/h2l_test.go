package h2l

// Integration tests against a bundle the Python CLI made in the same CI run.
// H2L_BUNDLE: the bundle folder; ORT_DYLIB_PATH: libonnxruntime.so.1.x.
// Both unset: skipped with the reason. Set but wrong: the tests fail.

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func bundleDir(t *testing.T) string {
	t.Helper()
	dir, lib := os.Getenv("H2L_BUNDLE"), os.Getenv("ORT_DYLIB_PATH")
	if dir == "" && lib == "" {
		t.Skip("H2L_BUNDLE and ORT_DYLIB_PATH are not set")
	}
	if dir == "" || lib == "" {
		t.Fatalf("set both H2L_BUNDLE and ORT_DYLIB_PATH (got %q, %q)", dir, lib)
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err != nil {
		t.Fatalf("H2L_BUNDLE=%s has no manifest.json", dir)
	}
	if st, err := os.Stat(lib); err != nil || st.IsDir() {
		t.Fatalf("ORT_DYLIB_PATH=%s is not a file", lib)
	}
	return dir
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func editManifest(t *testing.T, dir string, f func(map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, "manifest.json")
	raw, _ := os.ReadFile(p)
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	f(v)
	out, _ := json.Marshal(v)
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func maxAbs(a, b []float32) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}

func TestGoldenVectorsMatchPython(t *testing.T) {
	b, err := Open(bundleDir(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p, _ := b.Path(b.Manifest.Golden.Inputs)
	shape, inputs, err := ReadNpyF32(p)
	if err != nil || shape[1] != b.Dim() {
		t.Fatalf("golden inputs: %v %v", shape, err)
	}
	checked := 0
	for name, outs := range b.Manifest.Golden.Outputs {
		got, err := b.Model(name).Project(inputs)
		if err != nil {
			t.Fatal(err)
		}
		for out, rel := range outs {
			rp, _ := b.Path(rel)
			_, want, err := ReadNpyF32(rp)
			if err != nil {
				t.Fatal(err)
			}
			have := got.Projected
			if out == "routing_weights" {
				have = got.RoutingWeights
			}
			if len(have) != len(want) {
				t.Fatalf("%s.%s: length %d != %d", name, out, len(have), len(want))
			}
			if d := maxAbs(have, want); d > 1e-5 {
				t.Errorf("%s.%s: max abs diff %g > 1e-5", name, out, d)
			}
			checked++
		}
	}
	if checked < 2 {
		t.Fatal("no golden outputs checked")
	}
}

func TestBadInputIsATypedError(t *testing.T) {
	b, err := Open(bundleDir(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	d := b.Dim()
	if _, err := b.Teacher().Project(make([]float32, d+1)); !errors.Is(err, ErrInput) {
		t.Errorf("wrong length: %v", err)
	}
	if _, err := b.Teacher().Project(nil); !errors.Is(err, ErrInput) {
		t.Errorf("empty: %v", err)
	}
	q := make([]float32, d)
	q[2] = float32(math.NaN())
	if _, err := b.Teacher().Project(q); !errors.Is(err, ErrInput) {
		t.Errorf("NaN: %v", err)
	}
	zero, err := b.Teacher().Project(make([]float32, d))
	if err != nil || math.IsNaN(float64(zero.Projected[0])) {
		t.Errorf("zero query: %v", err)
	}
}

func TestTamperedMissingSchemaUnsafe(t *testing.T) {
	src := bundleDir(t)

	dir := copyDir(t, src)
	p := filepath.Join(dir, "teacher.onnx")
	data, _ := os.ReadFile(p)
	data[len(data)/2] ^= 1
	os.WriteFile(p, data, 0o644)
	if _, err := Open(dir); !errors.Is(err, ErrChecksum) || !contains(err.Error(), "teacher.onnx") {
		t.Errorf("tampered: %v", err)
	}

	dir = copyDir(t, src)
	os.Remove(filepath.Join(dir, "golden", "inputs.npy"))
	if _, err := Open(dir); !errors.Is(err, ErrMissing) || !contains(err.Error(), "golden/inputs.npy") {
		t.Errorf("missing: %v", err)
	}

	dir = copyDir(t, src)
	editManifest(t, dir, func(v map[string]any) { v["schema_version"] = 99 })
	if _, err := Open(dir); !errors.Is(err, ErrSchemaVersion) {
		t.Errorf("schema: %v", err)
	}

	for _, evil := range []string{"../outside.onnx", "/etc/passwd", "golden/../../x"} {
		dir = copyDir(t, src)
		editManifest(t, dir, func(v map[string]any) { v["files"].([]any)[0].(map[string]any)["path"] = evil })
		if _, err := Open(dir); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("%s: %v", evil, err)
		}
	}

	dir = copyDir(t, src)
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("secret"), 0o644)
	os.Remove(filepath.Join(dir, "golden", "inputs.npy"))
	os.Symlink(outside, filepath.Join(dir, "golden", "inputs.npy"))
	if _, err := Open(dir); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("symlink: %v", err)
	}
}

func TestConcurrentProject(t *testing.T) {
	b, err := Open(bundleDir(t))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	model := b.Student()
	if model == nil {
		model = b.Teacher()
	}
	q := make([]float32, b.Dim())
	for i := range q {
		q[i] = float32(i%7) * 0.01
	}
	want, err := model.Project(q)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 25; k++ {
				got, err := model.Project(q)
				if err != nil {
					errs <- err
					return
				}
				if maxAbs(got.Projected, want.Projected) != 0 {
					errs <- errors.New("concurrent result differs")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func contains(s, sub string) bool { return len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0) }

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// A model file replaced after its hash was checked must not reach a session: Open builds sessions from
// the bytes it hashed. The hook swaps teacher.onnx for garbage between the check and the session build.
func TestSessionsUseVerifiedBytes(t *testing.T) {
	dir := copyDir(t, bundleDir(t))
	testHookAfterVerify = func(d string) {
		if err := os.WriteFile(filepath.Join(d, "teacher.onnx"), []byte("not an onnx model"), 0o644); err != nil {
			t.Error(err)
		}
	}
	defer func() { testHookAfterVerify = nil }()
	b, err := Open(dir)
	if err != nil {
		t.Fatalf("Open read the swapped file instead of the verified bytes: %v", err)
	}
	defer b.Close()
	testHookAfterVerify = nil
	if _, err := Open(dir); !errors.Is(err, ErrChecksum) {
		t.Fatalf("the swapped file must fail its sha256 check on the next Open, got %v", err)
	}
}
