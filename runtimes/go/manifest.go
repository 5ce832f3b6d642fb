package h2l

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// TensorSpec is one input or output of a model. Shape entries are numbers (float64 after JSON) or
// symbolic names (string).
type TensorSpec struct {
	Name  string `json:"name"`
	Dtype string `json:"dtype"`
	Shape []any  `json:"shape"`
}

// ModelEntry is one entry of manifest.models. Router, Candidates and Bound describe a routed teacher;
// EmbeddingModel and MaxSeqLength an encoder.
type ModelEntry struct {
	File             string         `json:"file"`
	Role             string         `json:"role"`
	Opset            int            `json:"opset"`
	IRVersion        int            `json:"ir_version"`
	Inputs           []TensorSpec   `json:"inputs"`
	Outputs          []TensorSpec   `json:"outputs"`
	Router           string         `json:"router,omitempty"`
	Candidates       int            `json:"candidates,omitempty"`
	Bound            string         `json:"bound,omitempty"`
	EmbeddingModel   string         `json:"embedding_model,omitempty"`
	MaxSeqLength     int            `json:"max_seq_length,omitempty"`
	Folded           bool           `json:"folded,omitempty"`
	Quantization     string         `json:"quantization,omitempty"`
	CheckpointSha256 string         `json:"checkpoint_sha256,omitempty"`
	Architecture     map[string]any `json:"architecture,omitempty"`
	SourceCheck      map[string]any `json:"source_check,omitempty"`
}

// TeacherInfo is manifest.teacher; Sha256 identifies the teacher the bundle was made from.
type TeacherInfo struct {
	NHeads         int      `json:"n_heads"`
	Dim            int      `json:"dim"`
	Temperature    float64  `json:"temperature"`
	ClusterIDs     []string `json:"cluster_ids"`
	EmbeddingModel string   `json:"embedding_model"`
	Sha256         string   `json:"sha256"`
}

// GoldenInfo is manifest.golden: inputs and, per model and output, the expected outputs (.npy paths).
type GoldenInfo struct {
	Inputs  string                       `json:"inputs"`
	Outputs map[string]map[string]string `json:"outputs"`
	Atol    float64                      `json:"atol"`
	Texts   string                       `json:"texts,omitempty"`
	Rows    []string                     `json:"rows,omitempty"`
}

// FileEntry is one entry of manifest.files: every file of the bundle with its sha256 and size.
type FileEntry struct {
	Path   string `json:"path"`
	Sha256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

// TokenizerInfo is manifest.tokenizer; runtimes truncate to MaxSeqLength, never the file's own setting.
type TokenizerInfo struct {
	File           string `json:"file"`
	MaxSeqLength   int    `json:"max_seq_length"`
	EmbeddingModel string `json:"embedding_model"`
	PadID          *int   `json:"pad_id,omitempty"`
}

// AnswersInfo is manifest.answers: answers.jsonl, one line per head in head order.
type AnswersInfo struct {
	File  string `json:"file"`
	Count int    `json:"count"`
}

// VerificationInfo is manifest.verification, the exporter's own parity report.
type VerificationInfo struct {
	Passed    bool             `json:"passed"`
	Provider  string           `json:"provider"`
	MinCosine float64          `json:"min_cosine"`
	Checks    []map[string]any `json:"checks"`
	Skipped   []map[string]any `json:"skipped,omitempty"`
	Summary   map[string]any   `json:"summary,omitempty"`
}

// Manifest is manifest.json (schema_version 1).
type Manifest struct {
	SchemaVersion int                   `json:"schema_version"`
	Format        string                `json:"format"`
	H2LVersion    string                `json:"h2l_version"`
	Name          string                `json:"name"`
	Teacher       TeacherInfo           `json:"teacher"`
	Models        map[string]ModelEntry `json:"models"`
	Golden        GoldenInfo            `json:"golden"`
	Files         []FileEntry           `json:"files"`
	Versions      map[string]string     `json:"versions"`
	Verification  VerificationInfo      `json:"verification"`
	Tokenizer     *TokenizerInfo        `json:"tokenizer,omitempty"`
	Answers       *AnswersInfo          `json:"answers,omitempty"`
}

var (
	sha256Hex  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	modelRoles = map[string]string{"teacher": "teacher", "student": "student", "routed": "routed_teacher", "encoder": "encoder"}
	rowKinds   = map[string]bool{"stored": true, "sampled": true, "random": true, "zero": true}
)

// parseManifest decodes and checks manifest bytes; every refusal wraps ErrManifest or ErrSchemaVersion.
func parseManifest(raw []byte) (Manifest, error) {
	var m Manifest
	var probe struct {
		SchemaVersion json.RawMessage `json:"schema_version"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return m, wrap(ErrManifest, "manifest.json is not a JSON object: %w", err)
	}
	var version int
	if err := json.Unmarshal(probe.SchemaVersion, &version); err != nil || version != SchemaVersion {
		return m, wrap(ErrSchemaVersion, "found %s, this runtime reads %d (re-export or upgrade)", string(probe.SchemaVersion), SchemaVersion)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return m, wrap(ErrManifest, "field %q holds a JSON %s where %s belongs: %w", te.Field, te.Value, te.Type, err)
		}
		return m, wrap(ErrManifest, "%w", err)
	}
	if err := m.validate(); err != nil {
		return m, wrap(ErrManifest, "%w", err)
	}
	return m, nil
}

// validate checks the values json.Unmarshal cannot: ranges, enums, hex digests, required keys.
func (m *Manifest) validate() error {
	if m.Format != "h2l-bundle" {
		return fmt.Errorf("format is %q, not \"h2l-bundle\"", m.Format)
	}
	t := m.Teacher
	if t.NHeads < 1 || t.Dim < 1 || !(t.Temperature > 0) {
		return fmt.Errorf("teacher needs n_heads >= 1, dim >= 1 and temperature > 0 (got %d, %d, %g)", t.NHeads, t.Dim, t.Temperature)
	}
	if len(t.ClusterIDs) != t.NHeads {
		return fmt.Errorf("teacher.cluster_ids has %d entries for %d heads", len(t.ClusterIDs), t.NHeads)
	}
	if !sha256Hex.MatchString(t.Sha256) {
		return fmt.Errorf("teacher.sha256 %q is not 64 lowercase hex digits", t.Sha256)
	}
	if _, ok := m.Models["teacher"]; !ok {
		return errors.New("models has no teacher")
	}
	for name, e := range m.Models {
		role, known := modelRoles[name]
		if !known || e.Role != role {
			return fmt.Errorf("models.%s: unknown model or role %q", name, e.Role)
		}
		if e.File == "" || len(e.Inputs) == 0 || len(e.Outputs) == 0 {
			return fmt.Errorf("models.%s needs file, inputs and outputs", name)
		}
		for _, s := range append(append([]TensorSpec{}, e.Inputs...), e.Outputs...) {
			if err := s.validate(); err != nil {
				return fmt.Errorf("models.%s: %w", name, err)
			}
		}
	}
	if m.Golden.Inputs == "" || !(m.Golden.Atol > 0) {
		return errors.New("golden needs inputs and atol > 0")
	}
	for _, r := range m.Golden.Rows {
		if !rowKinds[r] {
			return fmt.Errorf("golden.rows: unknown kind %q", r)
		}
	}
	for _, f := range m.Files {
		if f.Path == "" || !sha256Hex.MatchString(f.Sha256) || f.Bytes < 0 {
			return fmt.Errorf("files: entry %q needs a path, a 64-hex sha256 and bytes >= 0", f.Path)
		}
	}
	if m.Tokenizer != nil && (m.Tokenizer.File == "" || m.Tokenizer.MaxSeqLength < 1) {
		return errors.New("tokenizer needs file and max_seq_length >= 1")
	}
	if m.Answers != nil && (m.Answers.File == "" || m.Answers.Count < 0) {
		return errors.New("answers needs file and count >= 0")
	}
	return nil
}

func (s TensorSpec) validate() error {
	if s.Name == "" || (s.Dtype != "float32" && s.Dtype != "int64") {
		return fmt.Errorf("tensor %q: dtype %q is not float32 or int64", s.Name, s.Dtype)
	}
	for _, d := range s.Shape {
		switch v := d.(type) {
		case string:
		case float64:
			if v < 1 || v != float64(int64(v)) {
				return fmt.Errorf("tensor %s: shape entry %v is not a positive integer", s.Name, v)
			}
		default:
			return fmt.Errorf("tensor %s: shape entry %v is neither a number nor a name", s.Name, d)
		}
	}
	return nil
}

// referenced lists every path the manifest points at outside files (each must have a files entry).
func (m *Manifest) referenced() []string {
	refs := []string{m.Golden.Inputs}
	for _, e := range m.Models {
		refs = append(refs, e.File)
	}
	for _, outs := range m.Golden.Outputs {
		for _, rel := range outs {
			refs = append(refs, rel)
		}
	}
	if m.Golden.Texts != "" {
		refs = append(refs, m.Golden.Texts)
	}
	if m.Tokenizer != nil {
		refs = append(refs, m.Tokenizer.File)
	}
	if m.Answers != nil {
		refs = append(refs, m.Answers.File)
	}
	return refs
}
