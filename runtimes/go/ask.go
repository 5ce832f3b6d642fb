package h2l

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

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
