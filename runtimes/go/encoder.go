package h2l

import (
	"fmt"
	"sync"

	"github.com/sugarme/tokenizer"
	ort "github.com/yalue/onnxruntime_go"
)

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
