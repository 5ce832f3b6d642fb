package h2l

// Integration tests against a bundle the Python CLI made in the same CI run.
// H2L_BUNDLE: the bundle folder; ORT_DYLIB_PATH: libonnxruntime.so.1.x.
// Both unset: skipped with the reason. Set but wrong: the tests fail.

import (
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func bundleDir(t testing.TB) string {
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

// copyTree copies a bundle folder (regular files and folders only) to dst.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if d.IsDir() {
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
}

func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "bundle")
	copyTree(t, src, dst)
	return dst
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func readJSON(t testing.TB, p string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(p)
	must(t, err)
	var v map[string]any
	must(t, json.Unmarshal(raw, &v))
	return v
}

func writeJSON(t testing.TB, p string, v any) {
	t.Helper()
	out, err := json.Marshal(v)
	must(t, err)
	must(t, os.WriteFile(p, out, 0o644))
}

func editManifest(t testing.TB, dir string, f func(map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, "manifest.json")
	v := readJSON(t, p)
	f(v)
	writeJSON(t, p, v)
}

func openT(t testing.TB, dir string) *Bundle {
	t.Helper()
	b, err := Open(dir)
	must(t, err)
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

func maxAbs(a, b []float32) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}

func TestGoldenVectorsMatchPython(t *testing.T) {
	b := openT(t, bundleDir(t))
	inputs, _, err := b.Golden()
	must(t, err)
	checked := 0
	for name := range b.Manifest.Golden.Outputs {
		if name == "encoder" { // text in, not query embeddings: TestTextGolden
			continue
		}
		got, err := b.Model(name).Project(inputs)
		must(t, err)
		diffs, err := b.GoldenDiff(name, got)
		must(t, err)
		for out, d := range diffs {
			if d > 1e-5 {
				t.Errorf("%s.%s: max abs diff %g > 1e-5", name, out, d)
			}
			checked++
		}
	}
	if checked < 2 {
		t.Fatalf("only %d golden outputs checked", checked)
	}
}

func TestBadInputIsATypedError(t *testing.T) {
	b := openT(t, bundleDir(t))
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
	var none *Model
	if _, err := none.Project(q); !errors.Is(err, ErrInput) {
		t.Errorf("nil model: %v", err)
	}
}

func TestTamperedMissingSchemaUnsafe(t *testing.T) {
	src := bundleDir(t)

	dir := copyDir(t, src)
	p := filepath.Join(dir, "teacher.onnx")
	data, err := os.ReadFile(p)
	must(t, err)
	data[len(data)/2] ^= 1
	must(t, os.WriteFile(p, data, 0o644))
	if _, err := Open(dir); !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "teacher.onnx") {
		t.Errorf("tampered: %v", err)
	}

	dir = copyDir(t, src)
	must(t, os.Remove(filepath.Join(dir, "golden", "inputs.npy")))
	if _, err := Open(dir); !errors.Is(err, ErrMissing) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "golden/inputs.npy") {
		t.Errorf("missing (errors.Is must reach fs.ErrNotExist): %v", err)
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
	must(t, os.WriteFile(outside, []byte("secret"), 0o644))
	must(t, os.Remove(filepath.Join(dir, "golden", "inputs.npy")))
	must(t, os.Symlink(outside, filepath.Join(dir, "golden", "inputs.npy")))
	if _, err := Open(dir); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("symlink: %v", err)
	}
}

func TestConcurrentProject(t *testing.T) {
	b := openT(t, bundleDir(t))
	model := b.Student()
	if model == nil {
		model = b.Teacher()
	}
	q := make([]float32, b.Dim())
	for i := range q {
		q[i] = float32(i%7) * 0.01
	}
	want, err := model.Project(q)
	must(t, err)
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

// Close while goroutines are inside Project: every call either succeeds with the right answer or
// returns ErrClosed; none touches a freed session (run under -race; a use-after-free would crash).
func TestCloseWhileProjectInFlight(t *testing.T) {
	b, err := Open(bundleDir(t))
	must(t, err)
	inputs, _, err := b.Golden()
	must(t, err)
	want, err := b.Teacher().Project(inputs)
	must(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, closed := 0, 0
	started := make(chan struct{}, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				if k == 2 {
					started <- struct{}{}
				}
				got, err := b.Teacher().Project(inputs)
				mu.Lock()
				switch {
				case errors.Is(err, ErrClosed):
					closed++
					mu.Unlock()
					return
				case err != nil:
					mu.Unlock()
					t.Error(err)
					return
				case maxAbs(got.Projected, want.Projected) != 0:
					mu.Unlock()
					t.Error("answer differs")
					return
				}
				ok++
				mu.Unlock()
			}
		}()
	}
	for g := 0; g < 8; g++ {
		<-started
	}
	must(t, b.Close())
	wg.Wait()
	must(t, b.Close()) // a second Close is harmless
	if closed != 8 || ok < 16 {
		t.Fatalf("%d calls ok, %d goroutines saw ErrClosed (want >= 16 and 8)", ok, closed)
	}
}

func TestSessionsUseVerifiedBytes(t *testing.T) {
	// A model file replaced after its hash was checked must not reach a session: Open builds sessions
	// from the bytes it hashed. The hook swaps teacher.onnx for garbage between the check and the build.
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
	must(t, b.Close())
	testHookAfterVerify = nil
	if _, err := Open(dir); !errors.Is(err, ErrChecksum) {
		t.Fatalf("the swapped file must fail its sha256 check on the next Open, got %v", err)
	}
}

func TestNpyReaders(t *testing.T) {
	// Headers as numpy 1.x/2.x write them (version 1.0, 64-byte aligned).
	mk := func(descr, shape string, body []byte) []byte {
		h := "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }"
		for (10+len(h)+1)%64 != 0 {
			h += " "
		}
		h += "\n"
		out := append([]byte("\x93NUMPY\x01\x00"), byte(len(h)), byte(len(h)>>8))
		return append(append(out, h...), body...)
	}
	i8 := []byte{3, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	shape, ints, err := ParseNpyI64(mk("<i8", "(1, 2)", i8))
	must(t, err)
	if len(shape) != 2 || shape[1] != 2 || ints[0] != 3 || ints[1] != -2 {
		t.Fatalf("int64: %v %v", shape, ints)
	}
	if _, _, err := ParseNpyF32(mk("<i8", "(1, 2)", i8)); !errors.Is(err, ErrInput) {
		t.Errorf("int64 read as float32: %v", err)
	}
	if _, _, err := ParseNpyI64(mk("<i8", "(3,)", i8)); !errors.Is(err, ErrInput) {
		t.Errorf("short body: %v", err)
	}
	_, f, err := ParseNpyF32(mk("<f4", "(1,)", []byte{0, 0, 0x80, 0x3f}))
	must(t, err)
	if f[0] != 1 {
		t.Fatalf("float32: %v", f)
	}
}

func benchProject(b *testing.B, model string, batch int) {
	bun := openT(b, bundleDir(b))
	m := bun.Model(model)
	if m == nil {
		b.Skipf("bundle has no %s", model)
	}
	inputs, rows, err := bun.Golden()
	must(b, err)
	d := bun.Dim()
	q := make([]float32, 0, batch*d)
	for i := 0; i < batch; i++ {
		r := i % rows
		q = append(q, inputs[r*d:(r+1)*d]...)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Project(q); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*batch), "us/query")
}

func BenchmarkTeacherBatch1(b *testing.B)  { benchProject(b, "teacher", 1) }
func BenchmarkTeacherBatch32(b *testing.B) { benchProject(b, "teacher", 32) }
func BenchmarkStudentBatch1(b *testing.B)  { benchProject(b, "student", 1) }
func BenchmarkStudentBatch32(b *testing.B) { benchProject(b, "student", 32) }
