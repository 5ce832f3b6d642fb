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
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
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
	ErrClosed        = errors.New("bundle closed")
)

// wrap prefixes kind; a %w in format wraps a cause too, so errors.Is reaches both.
func wrap(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{kind}, args...)...)
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
		return wrap(ErrLibrary, "%s: %w", p, err)
	}
	return nil
}

// Model is one model of a bundle with its checked session. Its Project holds the bundle's read lock,
// so Bundle.Close waits for calls in flight and later calls get ErrClosed.
type Model struct {
	Name    string
	Entry   ModelEntry
	dim     int
	input   string
	outputs []TensorSpec
	session *ort.DynamicAdvancedSession
	bundle  *Bundle
}

// Projection is the result for a batch, row-major. Projected is [Batch, dim]; RoutingWeights is
// [Batch, n_heads] for the teacher. For the routed teacher TopHeads and TopWeights are [Batch, K] and
// NeglectedMass is [Batch]: the softmax mass its K candidates left out, a proven upper bound for
// router "screen", an estimate for "ivf" (Model.Bound says which). Floats and Ints hold every output.
type Projection struct {
	Batch          int
	Projected      []float32
	RoutingWeights []float32
	TopHeads       []int64
	TopWeights     []float32
	NeglectedMass  []float32
	Floats         map[string][]float32
	Ints           map[string][]int64
}

// Bundle is an opened, integrity-checked bundle. Close it once; it is safe to Close while other
// goroutines are inside Project.
type Bundle struct {
	Root     string
	Manifest Manifest
	// ManifestSha256 is the sha256 of the exact manifest bytes the bundle was opened from.
	ManifestSha256 string
	models         map[string]*Model // read-only after Open
	text           *textModel        // encoder + tokenizer, nil without an encoder
	answers        []string          // answers.jsonl in head order, nil without one
	answerVecs     []float32         // the teacher's answers [N, d], for the student's nearest answer
	mu             sync.RWMutex      // Project holds it shared, Close exclusive
	closed         bool
}

func specOf(info ort.InputOutputInfo) TensorSpec {
	dtype := fmt.Sprint(info.DataType)
	switch info.DataType {
	case ort.TensorElementDataTypeFloat:
		dtype = "float32"
	case ort.TensorElementDataTypeInt64:
		dtype = "int64"
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

// singleThreadOptions are the session options every h2l model uses: one intra-op and one inter-op
// thread, so that services scale by calling from many goroutines. The caller destroys them.
func singleThreadOptions() (*ort.SessionOptions, error) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, wrap(ErrRuntime, "%w", err)
	}
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		opts.Destroy()
		return nil, wrap(ErrRuntime, "%w", err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		opts.Destroy()
		return nil, wrap(ErrRuntime, "%w", err)
	}
	return opts, nil
}

func openModel(name string, e ModelEntry, data []byte, dim int) (*Model, error) {
	opts, err := singleThreadOptions()
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(data)
	if err != nil {
		return nil, wrap(ErrRuntime, "%s: %w", e.File, err)
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
	if len(ins) != 1 || len(ins[0].Dimensions) != 2 || ins[0].Dimensions[1] != int64(dim) || gotIn[0].Dtype != "float32" {
		return nil, wrap(ErrContract, "%s: expected one float32 [batch, %d] input, got %v", name, dim, gotIn)
	}
	outNames := make([]string, len(outs))
	for i, o := range outs {
		outNames[i] = o.Name
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{ins[0].Name}, outNames, opts)
	if err != nil {
		return nil, wrap(ErrRuntime, "%s: %w", e.File, err)
	}
	return &Model{Name: name, Entry: e, dim: dim, input: ins[0].Name, outputs: gotOut, session: sess}, nil
}

// Open reads and checks the bundle at dir and opens its sessions. It reads through an os.Root opened
// once on dir: nothing outside the folder, no symlinks, manifest capped at MaxManifestBytes, every file's
// sha256 checked, every model scanned for external data before onnxruntime sees it.
func Open(dir string) (*Bundle, error) { return open(dir, nil) }

// OpenVerified is Open for a signed bundle: manifest.sig must be key's ed25519 signature over the exact
// bytes of manifest.json, checked before the manifest is parsed or anything else is read. Refusals wrap
// ErrSignature and one of ErrNoSignature, ErrWrongKey, ErrManifestChanged, ErrSignatureFormat.
func OpenVerified(dir string, key ed25519.PublicKey) (*Bundle, error) {
	if len(key) != ed25519.PublicKeySize {
		return nil, wrap(ErrPublicKey, "a %d-byte ed25519 public key is required, got %d bytes", ed25519.PublicKeySize, len(key))
	}
	return open(dir, key)
}

func open(dir string, key ed25519.PublicKey) (*Bundle, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, wrap(ErrMissing, "bundle folder %s: %w", dir, err)
	}
	defer root.Close()
	raw, err := readCapped(root, "manifest.json", MaxManifestBytes)
	if err != nil {
		return nil, err
	}
	if key != nil {
		sig, err := readCapped(root, "manifest.sig", MaxSignatureBytes)
		if errors.Is(err, ErrMissing) {
			return nil, sigErr(ErrNoSignature, "%s has no manifest.sig", dir)
		}
		if err != nil {
			return nil, sigErr(ErrSignatureFormat, "%w", err)
		}
		if err := verifySignature(raw, sig, key); err != nil {
			return nil, err
		}
	}
	if err := checkDepth(raw); err != nil {
		return nil, err
	}
	m, err := parseManifest(raw)
	if err != nil {
		return nil, err
	}
	verified, err := checkFiles(root, m)
	if err != nil {
		return nil, err
	}
	listed := map[string]bool{}
	for _, f := range m.Files {
		listed[f.Path] = true
	}
	for _, e := range m.Models {
		if err := checkModelBytes(e.File, verified[e.File], listed); err != nil {
			return nil, err
		}
	}
	if testHookAfterVerify != nil {
		testHookAfterVerify(dir)
	}
	if err := initRuntime(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	b := &Bundle{Root: dir, Manifest: m, ManifestSha256: hex.EncodeToString(sum[:]), models: map[string]*Model{}}
	for _, name := range []string{"teacher", "student", "routed"} {
		e, ok := m.Models[name]
		if !ok {
			continue
		}
		model, err := openModel(name, e, verified[e.File], m.Teacher.Dim)
		if err != nil {
			return nil, errors.Join(err, b.Close())
		}
		model.bundle = b
		b.models[name] = model
	}
	if err := b.openText(verified); err != nil {
		return nil, errors.Join(err, b.Close())
	}
	return b, nil
}

// openText loads the encoder, tokenizer and answers a bundle may carry (issue 13).
func (b *Bundle) openText(verified map[string][]byte) error {
	m := b.Manifest
	if m.Answers != nil {
		answers, err := readAnswers(verified[m.Answers.File], m)
		if err != nil {
			return err
		}
		b.answers = answers
	}
	e, ok := m.Models["encoder"]
	if !ok {
		return nil
	}
	if m.Tokenizer == nil {
		return wrap(ErrManifest, "models.encoder needs a tokenizer entry")
	}
	text, err := openEncoder(e, verified[e.File], m.Tokenizer, verified[m.Tokenizer.File], m.Teacher.Dim)
	if err != nil {
		return err
	}
	b.text = text
	if _, ok := m.Models["student"]; ok {
		vecs, err := teacherAnswerVectors(verified[m.Models["teacher"].File], m.Teacher.NHeads, m.Teacher.Dim)
		if err != nil {
			return err
		}
		b.answerVecs = vecs
	}
	return nil
}

// Close waits for Project calls in flight, then releases the sessions. Later calls return ErrClosed;
// a second Close returns nil.
func (b *Bundle) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	var errs []error
	for name, m := range b.models {
		if err := m.session.Destroy(); err != nil {
			errs = append(errs, wrap(ErrRuntime, "closing %s: %w", name, err))
		}
	}
	if b.text != nil {
		if err := b.text.session.Destroy(); err != nil {
			errs = append(errs, wrap(ErrRuntime, "closing the encoder: %w", err))
		}
	}
	return errors.Join(errs...)
}

// HasEncoder says whether the bundle can embed text (EmbedText, Ask).
func (b *Bundle) HasEncoder() bool { return b.text != nil }

// Answers returns the answer texts in head order, or nil when the bundle carries none.
func (b *Bundle) Answers() []string { return b.answers }

// Dim is the query embedding dimension.
func (b *Bundle) Dim() int { return b.Manifest.Teacher.Dim }

// Teacher returns the teacher model.
func (b *Bundle) Teacher() *Model { return b.models["teacher"] }

// Student returns the student model, or nil when the bundle has none.
func (b *Bundle) Student() *Model { return b.models["student"] }

// Routed returns the routed teacher (teacher_routed.onnx), or nil when the bundle has none.
func (b *Bundle) Routed() *Model { return b.models["routed"] }

// Model returns "teacher", "student" or "routed", or nil.
func (b *Bundle) Model(name string) *Model { return b.models[name] }

// Path resolves a manifest path inside the bundle (absolute, "..", escaping symlinks refused).
func (b *Bundle) Path(rel string) (string, error) { return SafePath(b.Root, rel) }

// Project runs one query (dim floats) or a batch (batch*dim floats, row-major).
// Calling it on a nil *Model (e.g. Student() of a teacher-only bundle) returns ErrInput; after the
// bundle's Close it returns ErrClosed.
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
	in, err := ort.NewTensor(ort.NewShape(int64(batch), int64(m.dim)), append([]float32(nil), q...))
	if err != nil {
		return nil, wrap(ErrRuntime, "%w", err)
	}
	defer in.Destroy()
	outs := make([]ort.Value, len(m.outputs))
	m.bundle.mu.RLock()
	defer m.bundle.mu.RUnlock()
	if m.bundle.closed {
		return nil, wrap(ErrClosed, "%s: Project after Close", m.Name)
	}
	if err := m.session.Run([]ort.Value{in}, outs); err != nil {
		return nil, wrap(ErrRuntime, "%w", err)
	}
	defer func() {
		for _, v := range outs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	res := &Projection{Batch: batch, Floats: map[string][]float32{}, Ints: map[string][]int64{}}
	for i, v := range outs {
		name := m.outputs[i].Name
		switch t := v.(type) {
		case *ort.Tensor[float32]:
			res.Floats[name] = append([]float32(nil), t.GetData()...)
		case *ort.Tensor[int64]:
			res.Ints[name] = append([]int64(nil), t.GetData()...)
		default:
			return nil, wrap(ErrRuntime, "output %s is neither float32 nor int64", name)
		}
	}
	res.Projected, res.RoutingWeights = res.Floats["projected_embedding"], res.Floats["routing_weights"]
	res.TopHeads, res.TopWeights = res.Ints["top_heads"], res.Floats["top_weights"]
	res.NeglectedMass = res.Floats["neglected_mass_bound"]
	if res.NeglectedMass == nil {
		res.NeglectedMass = res.Floats["neglected_mass_estimate"]
	}
	return res, nil
}

// ReadFile returns a file listed in the manifest after checking its bytes against the manifest's sha256
// (golden vectors, tokenizer, answers). A file changed since Open fails with ErrChecksum.
func (b *Bundle) ReadFile(rel string) ([]byte, error) {
	for _, f := range b.Manifest.Files {
		if f.Path == rel {
			root, err := os.OpenRoot(b.Root)
			if err != nil {
				return nil, wrap(ErrMissing, "bundle folder %s: %w", b.Root, err)
			}
			defer root.Close()
			return hashFile(root, rel, f.Sha256, f.Bytes, true)
		}
	}
	return nil, wrap(ErrManifest, "%s is not listed in the manifest", rel)
}

// Golden returns the golden inputs [rows*dim] and their row count.
func (b *Bundle) Golden() ([]float32, int, error) {
	raw, err := b.ReadFile(b.Manifest.Golden.Inputs)
	if err != nil {
		return nil, 0, err
	}
	shape, data, err := ParseNpyF32(raw)
	if err != nil {
		return nil, 0, wrap(ErrManifest, "%s: %w", b.Manifest.Golden.Inputs, err)
	}
	if len(shape) != 2 || shape[1] != b.Dim() {
		return nil, 0, wrap(ErrManifest, "%s: shape %v is not [rows, %d]", b.Manifest.Golden.Inputs, shape, b.Dim())
	}
	return data, shape[0], nil
}
