// Package h2l opens an h2l artifact bundle and projects query embeddings with onnxruntime.
//
//	b, err := h2l.Open("artifacts/demo/bundle") // manifest, sha256, I/O contract
//	out, err := b.Teacher().Project(q)          // q: batch*dim float32, row-major
//
// onnxruntime is loaded once per process from ORT_DYLIB_PATH (or SetLibraryPath).
// Thread safety: a Model's Project may be called from many goroutines at once; each
// call uses its own tensors and onnxruntime's Run is safe for concurrent use.
package h2l

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// SchemaVersion is the manifest schema this package reads.
const SchemaVersion = 1

// Error kinds; match them with errors.Is.
var (
	ErrLibrary       = errors.New("onnxruntime library")
	ErrManifest      = errors.New("invalid manifest")
	ErrSchemaVersion = errors.New("unsupported manifest schema_version")
	ErrUnsafePath    = errors.New("unsafe path in manifest")
	ErrMissing       = errors.New("bundle file missing")
	ErrChecksum      = errors.New("sha256 mismatch")
	ErrContract      = errors.New("I/O contract mismatch")
	ErrInput         = errors.New("bad input")
	ErrRuntime       = errors.New("onnxruntime")
)

// wrap prefixes kind; a %w in format wraps a cause too, so errors.Is reaches both.
func wrap(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{kind}, args...)...)
}

// TensorSpec is one input or output of a model: shape entries are numbers or symbolic names.
type TensorSpec struct {
	Name  string `json:"name"`
	Dtype string `json:"dtype"`
	Shape []any  `json:"shape"`
}

// ModelEntry is a model of the manifest.
type ModelEntry struct {
	File    string       `json:"file"`
	Role    string       `json:"role"`
	Inputs  []TensorSpec `json:"inputs"`
	Outputs []TensorSpec `json:"outputs"`
}

// Manifest holds the parts of manifest.json a service needs.
type Manifest struct {
	SchemaVersion int    `json:"schema_version"`
	Name          string `json:"name"`
	Teacher       struct {
		NHeads         int      `json:"n_heads"`
		Dim            int      `json:"dim"`
		Temperature    float64  `json:"temperature"`
		ClusterIDs     []string `json:"cluster_ids"`
		EmbeddingModel string   `json:"embedding_model"`
	} `json:"teacher"`
	Models map[string]ModelEntry `json:"models"`
	Golden struct {
		Inputs  string                       `json:"inputs"`
		Outputs map[string]map[string]string `json:"outputs"`
		Atol    float64                      `json:"atol"`
	} `json:"golden"`
	Files []struct {
		Path   string `json:"path"`
		Sha256 string `json:"sha256"`
		Bytes  int64  `json:"bytes"`
	} `json:"files"`
}

// testHookAfterVerify, set only by tests, runs between the hash check and the session builds
// (to swap a file there and show the sessions use the verified bytes).
var testHookAfterVerify func(dir string)

var (
	libMu   sync.Mutex
	libPath string
)

// SetLibraryPath chooses the onnxruntime shared library before the first successful Open
// (default: $ORT_DYLIB_PATH). After a failed load it may be called again.
func SetLibraryPath(p string) {
	libMu.Lock()
	defer libMu.Unlock()
	libPath = p
}

// initRuntime loads onnxruntime once per process; a failed load is retried on the next Open.
func initRuntime() error {
	libMu.Lock()
	defer libMu.Unlock()
	if ort.IsInitialized() {
		return nil
	}
	p := libPath
	if p == "" {
		p = os.Getenv("ORT_DYLIB_PATH")
	}
	if p == "" {
		return wrap(ErrLibrary, "ORT_DYLIB_PATH is not set (point it at libonnxruntime.so.1.x)")
	}
	if st, err := os.Stat(p); err != nil || st.IsDir() {
		return wrap(ErrLibrary, "%s: no such file (set ORT_DYLIB_PATH to libonnxruntime.so.1.x)", p)
	}
	ort.SetSharedLibraryPath(p)
	if err := ort.InitializeEnvironment(); err != nil {
		return wrap(ErrLibrary, "%s: %v", p, err)
	}
	return nil
}

// Model is one model of a bundle (teacher or student) with its checked session.
type Model struct {
	Name    string
	dim     int
	outputs []string
	session *ort.DynamicAdvancedSession
}

// Projection is the result for a batch: row-major [Batch, dim] (and [Batch, n_heads] for the teacher).
type Projection struct {
	Batch          int
	Projected      []float32
	RoutingWeights []float32 // nil for the student
}

// Bundle is an opened, integrity-checked bundle.
type Bundle struct {
	Root     string
	Manifest Manifest
	models   map[string]*Model
}

// SafePath resolves a manifest path inside root; absolute paths, ".." and escaping symlinks are refused.
func SafePath(root, rel string) (string, error) {
	if rel == "" || strings.Contains(rel, "\\") || path.IsAbs(rel) || filepath.IsAbs(rel) {
		return "", wrap(ErrUnsafePath, "%q", rel)
	}
	for _, part := range strings.Split(rel, "/") {
		if part == ".." || part == "." || part == "" {
			return "", wrap(ErrUnsafePath, "%q", rel)
		}
	}
	full := filepath.Join(root, filepath.FromSlash(rel))
	realRoot, err1 := filepath.EvalSymlinks(root)
	real, err2 := filepath.EvalSymlinks(full)
	if err1 == nil && err2 == nil {
		if r, err := filepath.Rel(realRoot, real); err != nil || r == ".." || strings.HasPrefix(r, "../") {
			return "", wrap(ErrUnsafePath, "%q resolves outside the bundle", rel)
		}
	}
	return full, nil
}

func readManifest(dir string) (Manifest, error) {
	var m Manifest
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return m, wrap(ErrMissing, "manifest.json: %v", err)
	}
	var probe struct {
		SchemaVersion *int `json:"schema_version"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return m, wrap(ErrManifest, "%v", err)
	}
	if probe.SchemaVersion == nil || *probe.SchemaVersion != SchemaVersion {
		found := -1
		if probe.SchemaVersion != nil {
			found = *probe.SchemaVersion
		}
		return m, wrap(ErrSchemaVersion, "found %d, this runtime reads %d (re-export or upgrade)", found, SchemaVersion)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, wrap(ErrManifest, "%v", err)
	}
	if _, ok := m.Models["teacher"]; !ok || m.Teacher.Dim <= 0 {
		return m, wrap(ErrManifest, "no teacher model or dim")
	}
	return m, nil
}

// hashFile streams rel's sha256 and size, checked against the manifest entry; keep returns the verified
// bytes (for models), so the session is built from what was hashed and the file is never reopened.
func hashFile(dir, rel, wantSha string, wantBytes int64, keep bool) ([]byte, error) {
	p, err := SafePath(dir, rel)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, wrap(ErrMissing, "%s (re-export the bundle): %w", rel, err)
	}
	defer f.Close()
	h := sha256.New()
	var buf bytes.Buffer
	var w io.Writer = h
	if keep {
		if wantBytes >= 0 && wantBytes < 1<<31 {
			buf.Grow(int(wantBytes))
		}
		w = io.MultiWriter(h, &buf)
	}
	n, err := io.Copy(w, io.LimitReader(f, wantBytes+1))
	if err != nil {
		return nil, wrap(ErrMissing, "%s: %w", rel, err)
	}
	if n != wantBytes || hex.EncodeToString(h.Sum(nil)) != wantSha {
		return nil, wrap(ErrChecksum, "bundle file %s fails its sha256 check (modified or corrupt)", rel)
	}
	return buf.Bytes(), nil
}

// checkFiles verifies every listed file and returns the verified bytes of each model file.
func checkFiles(dir string, m Manifest) (map[string][]byte, error) {
	modelFiles := map[string]bool{}
	for _, e := range m.Models {
		modelFiles[e.File] = true
	}
	listed := map[string]bool{}
	verified := map[string][]byte{}
	for _, f := range m.Files {
		data, err := hashFile(dir, f.Path, f.Sha256, f.Bytes, modelFiles[f.Path])
		if err != nil {
			return nil, err
		}
		if modelFiles[f.Path] {
			verified[f.Path] = data
		}
		listed[f.Path] = true
	}
	refs := []string{m.Golden.Inputs}
	for _, e := range m.Models {
		refs = append(refs, e.File)
	}
	for _, outs := range m.Golden.Outputs {
		for _, rel := range outs {
			refs = append(refs, rel)
		}
	}
	for _, rel := range refs {
		if !listed[rel] {
			return nil, wrap(ErrManifest, "%s is referenced but has no sha256 entry", rel)
		}
	}
	return verified, nil
}

func specOf(info ort.InputOutputInfo) TensorSpec {
	dtype := fmt.Sprint(info.DataType)
	if info.DataType == ort.TensorElementDataTypeFloat {
		dtype = "float32"
	}
	shape := make([]any, len(info.Dimensions))
	for i, d := range info.Dimensions {
		if d < 0 {
			shape[i] = "?"
		} else {
			shape[i] = d
		}
	}
	return TensorSpec{Name: info.Name, Dtype: dtype, Shape: shape}
}

// contractEqual compares session specs with the manifest's; onnxruntime_go reports symbolic dims as -1
// without their names, so a symbolic manifest dim must meet a -1 there.
func contractEqual(got []TensorSpec, want []TensorSpec) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].Name != want[i].Name || got[i].Dtype != want[i].Dtype || len(got[i].Shape) != len(want[i].Shape) {
			return false
		}
		for j, w := range want[i].Shape {
			g := got[i].Shape[j]
			switch wv := w.(type) {
			case string:
				if g != "?" {
					return false
				}
			case float64:
				if gi, ok := g.(int64); !ok || float64(gi) != wv {
					return false
				}
			default:
				return false
			}
		}
	}
	return true
}

func openModel(name string, e ModelEntry, data []byte, dim int) (*Model, error) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, wrap(ErrRuntime, "%v", err)
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		return nil, wrap(ErrRuntime, "%v", err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, wrap(ErrRuntime, "%v", err)
	}
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(data)
	if err != nil {
		return nil, wrap(ErrRuntime, "%s: %v", e.File, err)
	}
	gotIn, gotOut := make([]TensorSpec, len(ins)), make([]TensorSpec, len(outs))
	for i, x := range ins {
		gotIn[i] = specOf(x)
	}
	for i, x := range outs {
		gotOut[i] = specOf(x)
	}
	if !contractEqual(gotIn, e.Inputs) || !contractEqual(gotOut, e.Outputs) {
		return nil, wrap(ErrContract, "%s: session %v -> %v disagrees with manifest %v -> %v", name, gotIn, gotOut, e.Inputs, e.Outputs)
	}
	if len(ins) != 1 || len(ins[0].Dimensions) != 2 || ins[0].Dimensions[1] != int64(dim) {
		return nil, wrap(ErrContract, "%s: expected one [batch, %d] input, got %v", name, dim, gotIn)
	}
	outNames := make([]string, len(outs))
	for i, o := range outs {
		outNames[i] = o.Name
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{ins[0].Name}, outNames, opts)
	if err != nil {
		return nil, wrap(ErrRuntime, "%s: %v", e.File, err)
	}
	return &Model{Name: name, dim: dim, outputs: outNames, session: sess}, nil
}

// Open reads and checks the bundle at dir and opens its sessions.
func Open(dir string) (*Bundle, error) {
	m, err := readManifest(dir)
	if err != nil {
		return nil, err
	}
	verified, err := checkFiles(dir, m)
	if err != nil {
		return nil, err
	}
	if testHookAfterVerify != nil {
		testHookAfterVerify(dir)
	}
	if err := initRuntime(); err != nil {
		return nil, err
	}
	b := &Bundle{Root: dir, Manifest: m, models: map[string]*Model{}}
	for _, name := range []string{"teacher", "student"} {
		e, ok := m.Models[name]
		if !ok {
			continue
		}
		model, err := openModel(name, e, verified[e.File], m.Teacher.Dim)
		if err != nil {
			b.Close()
			return nil, err
		}
		b.models[name] = model
	}
	return b, nil
}

// Close releases the sessions.
func (b *Bundle) Close() {
	for _, m := range b.models {
		m.session.Destroy()
	}
	b.models = map[string]*Model{}
}

// Dim is the query embedding dimension.
func (b *Bundle) Dim() int { return b.Manifest.Teacher.Dim }

// Teacher returns the teacher model.
func (b *Bundle) Teacher() *Model { return b.models["teacher"] }

// Student returns the student model, or nil when the bundle has none.
func (b *Bundle) Student() *Model { return b.models["student"] }

// Model returns "teacher" or "student", or nil.
func (b *Bundle) Model(name string) *Model { return b.models[name] }

// Path resolves a manifest path safely inside the bundle.
func (b *Bundle) Path(rel string) (string, error) { return SafePath(b.Root, rel) }

// Project runs one query (dim floats) or a batch (batch*dim floats, row-major).
// Calling it on a nil *Model (e.g. Student() of a teacher-only bundle) returns ErrInput.
func (m *Model) Project(q []float32) (*Projection, error) {
	if m == nil {
		return nil, wrap(ErrInput, "no such model in this bundle (Student() is nil for a teacher-only bundle)")
	}
	if len(q) == 0 || len(q)%m.dim != 0 {
		return nil, wrap(ErrInput, "%d floats is not a whole number of %d-dimensional queries", len(q), m.dim)
	}
	for i, x := range q {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, wrap(ErrInput, "query %d contains NaN or Inf", i/m.dim)
		}
	}
	batch := len(q) / m.dim
	data := append([]float32(nil), q...)
	in, err := ort.NewTensor(ort.NewShape(int64(batch), int64(m.dim)), data)
	if err != nil {
		return nil, wrap(ErrRuntime, "%v", err)
	}
	defer in.Destroy()
	outs := make([]ort.Value, len(m.outputs))
	if err := m.session.Run([]ort.Value{in}, outs); err != nil {
		return nil, wrap(ErrRuntime, "%v", err)
	}
	defer func() {
		for _, v := range outs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	res := &Projection{Batch: batch}
	for i, v := range outs {
		t, ok := v.(*ort.Tensor[float32])
		if !ok {
			return nil, wrap(ErrRuntime, "output %s is not float32", m.outputs[i])
		}
		vals := append([]float32(nil), t.GetData()...)
		switch m.outputs[i] {
		case "projected_embedding":
			res.Projected = vals
		case "routing_weights":
			res.RoutingWeights = vals
		}
	}
	return res, nil
}
