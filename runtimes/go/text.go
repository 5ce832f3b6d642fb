package h2l

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/sugarme/tokenizer"
	"github.com/sugarme/tokenizer/normalizer"
	"github.com/sugarme/tokenizer/pretrained"
	ort "github.com/yalue/onnxruntime_go"
	"golang.org/x/text/unicode/norm"
	"google.golang.org/protobuf/encoding/protowire"
)

// ErrNoEncoder: the bundle has no encoder (export it with h2l export --with-encoder).
var ErrNoEncoder = errors.New("bundle has no encoder")

// textModel is a bundle's encoder session and tokenizer (both from verified bytes).
type textModel struct {
	session *ort.DynamicAdvancedSession
	inputs  []string // input_ids, attention_mask[, token_type_ids], in the session's order
	dim     int
	maxLen  int   // manifest tokenizer.max_seq_length, never the file's own truncation
	padID   int64 // manifest tokenizer.pad_id
	tok     *tokenizer.Tokenizer
	tokMu   sync.Mutex // sugarme's Tokenizer is not documented as safe for concurrent use
}

// loadTokenizer reads tokenizer.json from its verified bytes and makes it truncate at maxLen and not pad.
func loadTokenizer(data []byte, maxLen int) (*tokenizer.Tokenizer, error) {
	tk, err := pretrained.FromReader(bytes.NewReader(data))
	if err != nil {
		return nil, wrap(ErrManifest, "tokenizer.json: %w", err)
	}
	if _, ok := tk.GetNormalizer().(*normalizer.BertNormalizer); !ok {
		return nil, wrap(ErrManifest, "tokenizer.json: normalizer %T is not BertNormalizer (this runtime reads BERT WordPiece tokenizers)", tk.GetNormalizer())
	}
	tk.WithTruncation(&tokenizer.TruncationParams{MaxLength: maxLen, Strategy: tokenizer.LongestFirst})
	tk.WithPadding(nil)
	return tk, nil
}

// bertNormalize is HuggingFace's BertNormalizer with clean_text, handle_chinese_chars, lowercase and
// strip_accents (null in the file means "as lowercase"): sugarme's own normalizer leaves composed
// accents (é) in place, so its output differs from Python's. On normalized text it is a no-op.
func bertNormalize(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch {
		case c == 0 || c == utf8.RuneError || (c != '\t' && c != '\n' && c != '\r' && unicode.In(c, unicode.Cc, unicode.Cf)):
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || unicode.Is(unicode.Zs, c):
			b.WriteByte(' ')
		case normalizer.IsChinese(c):
			b.WriteByte(' ')
			b.WriteRune(c)
			b.WriteByte(' ')
		default:
			b.WriteRune(c)
		}
	}
	var out strings.Builder
	for _, c := range norm.NFD.String(b.String()) {
		if !unicode.Is(unicode.Mn, c) {
			out.WriteString(strings.ToLower(string(c)))
		}
	}
	return out.String()
}

func openEncoder(e ModelEntry, data []byte, tok *TokenizerInfo, tokData []byte, dim int) (*textModel, error) {
	if tok == nil {
		return nil, wrap(ErrManifest, "models.encoder needs a tokenizer entry")
	}
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
	names := make([]string, len(ins))
	for i, x := range ins {
		gotIn[i], names[i] = specOf(x), x.Name
		if gotIn[i].Dtype != "int64" || len(x.Dimensions) != 2 || (x.Name != "input_ids" && x.Name != "attention_mask" && x.Name != "token_type_ids") {
			return nil, wrap(ErrContract, "encoder input %v is not an int64 [batch, sequence] input_ids/attention_mask/token_type_ids", gotIn[i])
		}
	}
	for i, x := range outs {
		gotOut[i] = specOf(x)
	}
	if !contractEqual(gotIn, e.Inputs) || !contractEqual(gotOut, e.Outputs) {
		return nil, wrap(ErrContract, "encoder: session %v -> %v disagrees with manifest %v -> %v", gotIn, gotOut, e.Inputs, e.Outputs)
	}
	if len(outs) != 1 || outs[0].Name != "query_embedding" || len(outs[0].Dimensions) != 2 || outs[0].Dimensions[1] != int64(dim) {
		return nil, wrap(ErrContract, "encoder: expected one query_embedding [batch, %d] output, got %v", dim, gotOut)
	}
	tk, err := loadTokenizer(tokData, tok.MaxSeqLength)
	if err != nil {
		return nil, err
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, names, []string{"query_embedding"}, opts)
	if err != nil {
		return nil, wrap(ErrRuntime, "%s: %w", e.File, err)
	}
	t := &textModel{session: sess, inputs: names, dim: dim, maxLen: tok.MaxSeqLength, tok: tk}
	if tok.PadID != nil {
		t.padID = int64(*tok.PadID)
	}
	return t, nil
}

// Tokenize returns text's token ids as the encoder sees them ([CLS] ... [SEP], cut to the manifest's
// max_seq_length) and whether the text was cut. As in Python's h2l ask, invalid UTF-8, a NUL byte and
// empty or whitespace-only text are ErrInput (the BERT normalizer would silently turn them into
// [CLS] [SEP] or drop the NUL); other control characters are dropped as the normalizer drops them.
func (b *Bundle) Tokenize(text string) ([]int64, bool, error) {
	if b.text == nil {
		return nil, false, wrap(ErrNoEncoder, "re-export it with h2l export --with-encoder")
	}
	switch {
	case !utf8.ValidString(text):
		return nil, false, wrap(ErrInput, "text is not valid UTF-8")
	case strings.ContainsRune(text, 0):
		return nil, false, wrap(ErrInput, "text contains a NUL byte")
	case strings.TrimSpace(text) == "":
		return nil, false, wrap(ErrInput, "text is empty or whitespace only")
	}
	normalized := bertNormalize(text)
	b.text.tokMu.Lock()
	enc, err := b.text.tok.EncodeSingle(normalized, true)
	b.text.tokMu.Unlock()
	if err != nil {
		return nil, false, wrap(ErrInput, "tokenizing %q: %w", text, err)
	}
	ids := make([]int64, len(enc.Ids))
	for i, id := range enc.Ids {
		ids[i] = int64(id)
	}
	return ids, len(enc.Overflowing) > 0, nil
}

// TextEmbeddings are the encoder's outputs for a batch of texts.
type TextEmbeddings struct {
	Batch      int
	Dim        int
	Embeddings []float32 // [Batch, Dim], L2-normalised inside the graph
	InputIDs   [][]int64
	Truncated  []bool
}

// Row is text i's embedding.
func (t *TextEmbeddings) Row(i int) []float32 { return t.Embeddings[i*t.Dim : (i+1)*t.Dim] }

// EmbedText tokenizes texts and runs the bundle's encoder on them as one padded batch.
func (b *Bundle) EmbedText(texts []string) (*TextEmbeddings, error) {
	if b.text == nil {
		return nil, wrap(ErrNoEncoder, "re-export it with h2l export --with-encoder")
	}
	if len(texts) == 0 {
		return nil, wrap(ErrInput, "no texts")
	}
	res := &TextEmbeddings{Batch: len(texts), Dim: b.text.dim, InputIDs: make([][]int64, len(texts)), Truncated: make([]bool, len(texts))}
	seq := 0
	for i, text := range texts {
		ids, cut, err := b.Tokenize(text)
		if err != nil {
			return nil, fmt.Errorf("text %d: %w", i, err)
		}
		res.InputIDs[i], res.Truncated[i] = ids, cut
		seq = max(seq, len(ids))
	}
	n := len(texts)
	feed := map[string][]int64{"input_ids": make([]int64, n*seq), "attention_mask": make([]int64, n*seq), "token_type_ids": make([]int64, n*seq)}
	for i, ids := range res.InputIDs {
		for j := 0; j < seq; j++ {
			if j < len(ids) {
				feed["input_ids"][i*seq+j], feed["attention_mask"][i*seq+j] = ids[j], 1
			} else {
				feed["input_ids"][i*seq+j] = b.text.padID
			}
		}
	}
	shape := ort.NewShape(int64(n), int64(seq))
	ins := make([]ort.Value, len(b.text.inputs))
	defer func() {
		for _, v := range ins {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for k, name := range b.text.inputs {
		t, err := ort.NewTensor(shape, feed[name])
		if err != nil {
			return nil, wrap(ErrRuntime, "%w", err)
		}
		ins[k] = t
	}
	outs := []ort.Value{nil}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, wrap(ErrClosed, "encoder: EmbedText after Close")
	}
	if err := b.text.session.Run(ins, outs); err != nil {
		return nil, wrap(ErrRuntime, "encoder: %w", err)
	}
	defer outs[0].Destroy()
	t, ok := outs[0].(*ort.Tensor[float32])
	if !ok || len(t.GetData()) != n*b.text.dim {
		return nil, wrap(ErrRuntime, "encoder output is not float32 [%d, %d]", n, b.text.dim)
	}
	res.Embeddings = append([]float32(nil), t.GetData()...)
	return res, nil
}

// AskResult is one line of ask: field names and order as h2l ask prints them.
type AskResult struct {
	Text       string    `json:"text"`
	TopCluster string    `json:"top_cluster"`
	TopWeight  float32   `json:"top_weight"`
	Answer     *string   `json:"answer"`
	Embedding  []float32 `json:"embedding,omitempty"`
	Truncated  bool      `json:"truncated"`
}

// Ask embeds texts, projects them with model ("" = the student when the bundle has one, else the
// teacher; or "teacher", "student", "routed") and names the top cluster of each: for the teacher and
// the routed teacher the head of largest routing weight, for the student the cluster whose answer
// embedding is nearest (cosine) its projection. Answer is that cluster's answer text, or nil when the
// bundle carries none.
func (b *Bundle) Ask(texts []string, model string) ([]AskResult, error) {
	if model == "" {
		model = "teacher"
		if b.Student() != nil {
			model = "student"
		}
	}
	m := b.Model(model)
	if m == nil {
		return nil, wrap(ErrInput, "this bundle has no %q model (teacher, student or routed)", model)
	}
	emb, err := b.EmbedText(texts)
	if err != nil {
		return nil, err
	}
	p, err := m.Project(emb.Embeddings)
	if err != nil {
		return nil, err
	}
	n, d := b.Manifest.Teacher.NHeads, b.Dim()
	out := make([]AskResult, len(texts))
	for i, text := range texts {
		head, weight := -1, float32(math.Inf(-1))
		switch model {
		case "teacher":
			head, weight = argmax(p.RoutingWeights[i*n : (i+1)*n])
		case "routed":
			k := len(p.TopWeights) / p.Batch
			j, w := argmax(p.TopWeights[i*k : (i+1)*k])
			head, weight = int(p.TopHeads[i*k+j]), w
		default:
			head, weight = b.nearestAnswer(p.Projected[i*d : (i+1)*d])
		}
		if head < 0 || head >= n {
			return nil, wrap(ErrRuntime, "%s picked head %d of %d", model, head, n)
		}
		out[i] = AskResult{Text: text, TopCluster: b.Manifest.Teacher.ClusterIDs[head], TopWeight: weight,
			Embedding: append([]float32(nil), emb.Row(i)...), Truncated: emb.Truncated[i]}
		if b.answers != nil {
			a := b.answers[head]
			out[i].Answer = &a
		}
	}
	return out, nil
}

func argmax(v []float32) (int, float32) {
	best, w := -1, float32(math.Inf(-1))
	for i, x := range v {
		if x > w {
			best, w = i, x
		}
	}
	return best, w
}

// nearestAnswer is the head whose answer embedding (a row of the teacher's "answers" initializer) has
// the largest cosine with v.
func (b *Bundle) nearestAnswer(v []float32) (int, float32) {
	d := b.Dim()
	var vn float64
	for _, x := range v {
		vn += float64(x) * float64(x)
	}
	vn = math.Sqrt(vn)
	best, bestCos := -1, math.Inf(-1)
	for h := 0; h*d < len(b.answerVecs); h++ {
		row := b.answerVecs[h*d : (h+1)*d]
		var dot, an float64
		for j, a := range row {
			dot += float64(a) * float64(v[j])
			an += float64(a) * float64(a)
		}
		c := dot / (math.Sqrt(an)*vn + 1e-12)
		if c > bestCos {
			best, bestCos = h, c
		}
	}
	return best, float32(bestCos)
}

// readAnswers parses answers.jsonl: one {"cluster_id", "answer"} line per head, in head order.
func readAnswers(data []byte, m Manifest) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), len(data)+1)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var line struct {
			ClusterID *string `json:"cluster_id"`
			Answer    *string `json:"answer"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.ClusterID == nil || line.Answer == nil {
			return nil, wrap(ErrManifest, "%s line %d is not {\"cluster_id\": str, \"answer\": str}", m.Answers.File, len(out)+1)
		}
		i := len(out)
		if i >= len(m.Teacher.ClusterIDs) || *line.ClusterID != m.Teacher.ClusterIDs[i] {
			return nil, wrap(ErrManifest, "%s line %d names cluster %q, the teacher's head %d is another", m.Answers.File, i+1, *line.ClusterID, i)
		}
		out = append(out, *line.Answer)
	}
	if err := sc.Err(); err != nil {
		return nil, wrap(ErrManifest, "%s: %w", m.Answers.File, err)
	}
	if len(out) != m.Answers.Count || len(out) != m.Teacher.NHeads {
		return nil, wrap(ErrManifest, "%s has %d answers; the manifest says %d for %d heads", m.Answers.File, len(out), m.Answers.Count, m.Teacher.NHeads)
	}
	return out, nil
}

// teacherAnswerVectors reads the "answers" initializer ([N, d] float32) of the teacher's verified bytes:
// the student's top cluster is the answer nearest its projection.
func teacherAnswerVectors(model []byte, n, d int) ([]float32, error) {
	var found []float32
	err := walkProto(model, kModel, 0, func(protoKind, protowire.Number, []byte) error { return nil }, func(t []byte) error {
		if found != nil {
			return nil
		}
		vals, ok := answersTensor(t)
		if ok {
			found = vals
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(found) != n*d {
		return nil, wrap(ErrContract, "teacher.onnx has no float32 [%d, %d] \"answers\" initializer", n, d)
	}
	return found, nil
}

// answersTensor decodes a TensorProto named "answers" (raw_data or float_data).
func answersTensor(b []byte) ([]float32, bool) {
	var name string
	var raw []byte
	var floats []float32
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		switch {
		case num == 8 && typ == protowire.BytesType: // name
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, false
			}
			name, b = string(v), b[m:]
		case num == 9 && typ == protowire.BytesType: // raw_data
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, false
			}
			raw, b = v, b[m:]
		case num == 4 && typ == protowire.BytesType: // float_data, packed
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, false
			}
			for k := 0; k+4 <= len(v); k += 4 {
				floats = append(floats, math.Float32frombits(binary.LittleEndian.Uint32(v[k:])))
			}
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil, false
			}
			b = b[m:]
		}
	}
	if name != "answers" {
		return nil, false
	}
	if raw != nil {
		floats = make([]float32, len(raw)/4)
		for k := range floats {
			floats[k] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*k:]))
		}
	}
	return floats, true
}
