package h2l

import "math"

// GoldenDiff compares p, the named model's outputs for the golden inputs, with the bundle's golden
// vectors: the max abs difference per output (int64 outputs: the number of entries that differ).
// A length mismatch is an ErrContract error.
func (b *Bundle) GoldenDiff(model string, p *Projection) (map[string]float64, error) {
	diffs := map[string]float64{}
	for out, rel := range b.Manifest.Golden.Outputs[model] {
		raw, err := b.ReadFile(rel)
		if err != nil {
			return nil, err
		}
		if have, ok := p.Ints[out]; ok {
			_, want, err := ParseNpyI64(raw)
			if err != nil {
				return nil, wrap(ErrManifest, "%s: %w", rel, err)
			}
			if len(have) != len(want) {
				return nil, wrap(ErrContract, "%s.%s: %d values, golden has %d", model, out, len(have), len(want))
			}
			n := 0
			for i := range want {
				if have[i] != want[i] {
					n++
				}
			}
			diffs[out] = float64(n)
			continue
		}
		_, want, err := ParseNpyF32(raw)
		if err != nil {
			return nil, wrap(ErrManifest, "%s: %w", rel, err)
		}
		have := p.Floats[out]
		if len(have) != len(want) {
			return nil, wrap(ErrContract, "%s.%s: %d values, golden has %d", model, out, len(have), len(want))
		}
		d := 0.0
		for i := range want {
			d = math.Max(d, math.Abs(float64(have[i])-float64(want[i])))
		}
		diffs[out] = d
	}
	return diffs, nil
}
