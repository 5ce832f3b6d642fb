package h2l

import (
	"encoding/json"
	"errors"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// textBundle opens H2L_BUNDLE_TEXT (or H2L_BUNDLE when that one has an encoder); skips with the reason
// when neither carries an encoder, so a plain bundle still passes.
func textBundle(t *testing.T) *Bundle {
	t.Helper()
	dir := bundleDir(t)
	if v := os.Getenv("H2L_BUNDLE_TEXT"); v != "" {
		dir = v
	}
	b := openT(t, dir)
	if !b.HasEncoder() {
		t.Skipf("%s has no encoder (export with --with-encoder and set H2L_BUNDLE_TEXT; tests/test_runtimes_go.py passes rt_text_bundle)", dir)
	}
	return b
}

type goldenText struct {
	Text        string            `json:"text"`
	InputIDs    []int64           `json:"input_ids"`
	Truncated   bool              `json:"truncated"`
	TopCluster  string            `json:"top_cluster"`
	TopClusters map[string]string `json:"top_clusters"` // per model, when the exporter wrote them
}

func goldenTexts(t *testing.T, b *Bundle) ([]goldenText, []float32) {
	t.Helper()
	raw, err := b.ReadFile(b.Manifest.Golden.Texts)
	must(t, err)
	var texts []goldenText
	must(t, json.Unmarshal(raw, &texts))
	raw, err = b.ReadFile(b.Manifest.Golden.Outputs["encoder"]["query_embedding"])
	must(t, err)
	shape, emb, err := ParseNpyF32(raw)
	must(t, err)
	if len(texts) < 5 || len(shape) != 2 || shape[0] != len(texts) {
		t.Fatalf("%d golden texts, embeddings %v", len(texts), shape)
	}
	return texts, emb
}

func TestTextGoldenIdsEmbeddingsAndTopCluster(t *testing.T) {
	b := textBundle(t)
	texts, want := goldenTexts(t, b)
	sawTruncated := false
	all := make([]string, len(texts))
	for i, g := range texts {
		all[i] = g.Text
		ids, cut, err := b.Tokenize(g.Text)
		must(t, err)
		if len(ids) != len(g.InputIDs) || cut != g.Truncated {
			t.Errorf("text %d %.30q: %d ids (truncated %v), golden %d (%v)", i, g.Text, len(ids), cut, len(g.InputIDs), g.Truncated)
			continue
		}
		for j := range ids {
			if ids[j] != g.InputIDs[j] {
				t.Errorf("text %d %.30q: id %d is %d, golden %d", i, g.Text, j, ids[j], g.InputIDs[j])
				break
			}
		}
		if len(ids) > b.Manifest.Tokenizer.MaxSeqLength {
			t.Errorf("text %d: %d ids exceed max_seq_length %d", i, len(ids), b.Manifest.Tokenizer.MaxSeqLength)
		}
		sawTruncated = sawTruncated || cut
	}
	if !sawTruncated {
		t.Error("the golden texts must include one longer than max_seq_length")
	}
	emb, err := b.EmbedText(all) // one padded batch
	must(t, err)
	if d := maxAbs(emb.Embeddings, want); len(emb.Embeddings) != len(want) || d > 1e-5 {
		t.Errorf("batched embeddings differ from golden by %g", d)
	}
	for i := range texts { // and one text at a time (no padding)
		one, err := b.EmbedText(all[i : i+1])
		must(t, err)
		if d := maxAbs(one.Embeddings, want[i*emb.Dim:(i+1)*emb.Dim]); d > 1e-5 {
			t.Errorf("text %d alone: embedding differs from golden by %g", i, d)
		}
	}
	for _, model := range []string{"teacher", "student", "routed"} {
		if b.Model(model) == nil {
			continue
		}
		res, err := b.Ask(all, model)
		must(t, err)
		checked := 0
		for i, r := range res {
			if want, ok := texts[i].TopClusters[model]; ok {
				checked++
				if r.TopCluster != want {
					t.Errorf("%s, text %d %.30q: top cluster %q, Python %q", model, i, r.Text, r.TopCluster, want)
				}
			}
		}
		t.Logf("%s: %d top clusters compared with Python", model, checked)
	}
	res, err := b.Ask(all, "")
	must(t, err)
	for i, r := range res {
		if r.TopCluster != texts[i].TopCluster || r.Text != texts[i].Text || r.Truncated != texts[i].Truncated {
			t.Errorf("text %d %.30q: top cluster %q, Python %q", i, r.Text, r.TopCluster, texts[i].TopCluster)
		}
		if b.Answers() != nil && (r.Answer == nil || *r.Answer == "") {
			t.Errorf("text %d: the bundle has answers but ask returned none", i)
		}
		if len(r.Embedding) != emb.Dim || maxAbs(r.Embedding, want[i*emb.Dim:(i+1)*emb.Dim]) > 1e-5 {
			t.Errorf("text %d: ask's embedding is not the query embedding", i)
		}
	}
}

func TestTextBadInput(t *testing.T) {
	b := textBundle(t)
	// As Python's h2l ask: each refused with ErrInput, never embedded as [CLS] [SEP].
	for _, bad := range []string{"", "   \t\n ", "\xff\xfe not utf-8", "brake\x00 pads"} {
		if _, err := b.EmbedText([]string{"fine", bad}); !errors.Is(err, ErrInput) {
			t.Errorf("%q: want ErrInput, got %v", bad, err)
		}
	}
	withCtl, _, err := b.Tokenize("brake\x01 pads")
	must(t, err)
	plain, _, err := b.Tokenize("brake pads")
	must(t, err)
	if len(withCtl) != len(plain) {
		t.Errorf("control characters are dropped as the BERT normalizer drops them: %v vs %v", withCtl, plain)
	}
	long := strings.Repeat("wheel spokes and hubs ", 400)
	ids, cut, err := b.Tokenize(long)
	must(t, err)
	if !cut || len(ids) != b.Manifest.Tokenizer.MaxSeqLength {
		t.Errorf("a long text is cut to max_seq_length %d from the manifest: %d ids, truncated %v", b.Manifest.Tokenizer.MaxSeqLength, len(ids), cut)
	}
	if _, err := b.Ask([]string{"hello"}, "nonsense"); !errors.Is(err, ErrInput) {
		t.Errorf("unknown model: %v", err)
	}
}

func TestEmbedTextConcurrent(t *testing.T) {
	b := textBundle(t)
	texts := []string{"How do I fix a flat tyre?", "Café crème", "自行车的刹车怎么调？"}
	want, err := b.EmbedText(texts)
	must(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 3; k++ {
				got, err := b.EmbedText(texts)
				if err != nil {
					errs <- err
					return
				}
				if maxAbs(got.Embeddings, want.Embeddings) != 0 {
					errs <- errors.New("concurrent EmbedText differs")
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

func TestNoEncoderIsATypedError(t *testing.T) {
	b := openT(t, bundleDir(t))
	if b.HasEncoder() {
		t.Skip("H2L_BUNDLE has an encoder; this checks a plain bundle")
	}
	if _, err := b.EmbedText([]string{"hello"}); !errors.Is(err, ErrNoEncoder) {
		t.Errorf("EmbedText without an encoder: %v", err)
	}
	if _, err := b.Ask([]string{"hello"}, ""); !errors.Is(err, ErrNoEncoder) {
		t.Errorf("Ask without an encoder: %v", err)
	}
}

// benchText times one short question end to end (f: Ask or EmbedText), 1 onnxruntime thread, and
// reports p50 and p99 per call.
func benchText(b *testing.B, f func(*Bundle, []string) error) {
	dir := os.Getenv("H2L_BUNDLE_TEXT")
	if dir == "" {
		b.Skip("H2L_BUNDLE_TEXT is not set")
	}
	bun := openT(b, dir)
	q := []string{"How do I fix a flat tyre?"}
	times := make([]float64, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := f(bun, q); err != nil {
			b.Fatal(err)
		}
		times = append(times, float64(time.Since(t0).Microseconds()))
	}
	sort.Float64s(times)
	b.ReportMetric(times[len(times)/2], "p50_us")
	b.ReportMetric(times[(len(times)-1)*99/100], "p99_us")
}

// BenchmarkAskOneQuestion: text -> answer (tokenize, encoder, default model, top cluster, answer).
func BenchmarkAskOneQuestion(b *testing.B) {
	benchText(b, func(bun *Bundle, q []string) error { _, err := bun.Ask(q, ""); return err })
}

// BenchmarkEmbedTextOneQuestion: tokenize + encoder only, to show how much of ask the encoder is.
func BenchmarkEmbedTextOneQuestion(b *testing.B) {
	benchText(b, func(bun *Bundle, q []string) error { _, err := bun.EmbedText(q); return err })
}
