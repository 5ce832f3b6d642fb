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
	"os"
	"sync"
)

// SchemaVersion is the manifest schema this package reads.
const SchemaVersion = 1

// testHookAfterVerify, set only by tests, runs between the hash check and the session builds
// (to swap a file there and show the sessions use the verified bytes).
var testHookAfterVerify func(dir string)

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
