package h2l

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sugarme/tokenizer"
	"github.com/sugarme/tokenizer/normalizer"
	"github.com/sugarme/tokenizer/pretrained"
	"golang.org/x/text/unicode/norm"
)

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
