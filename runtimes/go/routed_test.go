package h2l

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// routedBundles lists H2L_BUNDLE_ROUTED (folders separated by ':'), bundles made with
// h2l export --routed (the pytest driver passes a screen and an ivf one).
func routedBundles(t *testing.T) []string {
	t.Helper()
	bundleDir(t) // ORT_DYLIB_PATH and H2L_BUNDLE checks
	v := os.Getenv("H2L_BUNDLE_ROUTED")
	if v == "" {
		t.Skip("H2L_BUNDLE_ROUTED is not set: no routed bundle to test (tests/test_runtimes_go.py passes rt_routed_bundles)")
	}
	return filepath.SplitList(v)
}

func TestRoutedGoldenAndBound(t *testing.T) {
	for _, dir := range routedBundles(t) {
		t.Run(filepath.Base(filepath.Dir(dir))+"/"+filepath.Base(dir), func(t *testing.T) {
			b := openT(t, dir)
			r := b.Routed()
			if r == nil {
				t.Fatalf("%s has no routed teacher", dir)
			}
			inputs, rows, err := b.Golden()
			must(t, err)
			got, err := r.Project(inputs)
			must(t, err)
			diffs, err := b.GoldenDiff("routed", got)
			must(t, err)
			for _, out := range []string{"projected_embedding", "top_heads", "top_weights"} {
				d, ok := diffs[out]
				if !ok {
					t.Fatalf("golden has no routed.%s", out)
				}
				if d > 1e-5 || (out == "top_heads" && d != 0) {
					t.Errorf("routed.%s differs from golden: %g", out, d)
				}
			}
			wantBound := map[string]string{"screen": "proven", "ivf": "estimate"}[r.Entry.Router]
			if r.Bound() != wantBound || r.Candidates() < 1 || len(got.TopHeads) != rows*r.Candidates() || len(got.NeglectedMass) != rows {
				t.Fatalf("router %s bound %q K %d: %d top_heads, %d masses for %d rows", r.Entry.Router, r.Bound(), r.Candidates(), len(got.TopHeads), len(got.NeglectedMass), rows)
			}
			for _, h := range got.TopHeads {
				if h < 0 || h >= int64(b.Manifest.Teacher.NHeads) {
					t.Fatalf("top_heads holds %d, outside 0..%d", h, b.Manifest.Teacher.NHeads-1)
				}
			}
		})
	}
}

func TestProjectRoutedFallsBackAboveTolerance(t *testing.T) {
	for _, dir := range routedBundles(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			b := openT(t, dir)
			inputs, rows, err := b.Golden()
			must(t, err)
			d := b.Dim()
			flat, err := b.Teacher().Project(inputs)
			must(t, err)
			routed, err := b.Routed().Project(inputs)
			must(t, err)
			// A tolerance between the smallest and largest mass, so some rows fall back and some do not.
			lo, hi := float32(math.Inf(1)), float32(0)
			for _, m := range routed.NeglectedMass {
				lo, hi = min(lo, m), max(hi, m)
			}
			if !(lo < hi) {
				t.Fatalf("golden masses do not spread (%g..%g); the test needs both kinds of rows", lo, hi)
			}
			tol := (lo + hi) / 2
			g, err := b.ProjectRouted(inputs, tol)
			must(t, err)
			if g.Proven != (b.Routed().Bound() == "proven") {
				t.Errorf("Proven %v for bound %q", g.Proven, b.Routed().Bound())
			}
			want := 0
			for i := 0; i < rows; i++ {
				row := g.Projected[i*d : (i+1)*d]
				if routed.NeglectedMass[i] > tol {
					want++
					if !g.FellBack[i] || maxAbs(row, flat.Projected[i*d:(i+1)*d]) > 1e-6 {
						t.Errorf("row %d (mass %g > %g) must be the flat teacher's", i, routed.NeglectedMass[i], tol)
					}
				} else if g.FellBack[i] || maxAbs(row, routed.Projected[i*d:(i+1)*d]) != 0 {
					t.Errorf("row %d (mass %g <= %g) must be the routed teacher's", i, routed.NeglectedMass[i], tol)
				}
			}
			if g.Fallbacks() != want || want == 0 || want == rows {
				t.Errorf("%d fallbacks, want %d of %d", g.Fallbacks(), want, rows)
			}
			all, err := b.ProjectRouted(inputs, 0)
			must(t, err)
			positive := 0
			for _, m := range routed.NeglectedMass {
				if m > 0 {
					positive++
				}
			}
			if all.Fallbacks() != positive {
				t.Errorf("tolerance 0: %d fallbacks, %d rows have mass > 0", all.Fallbacks(), positive)
			}
			if _, err := b.ProjectRouted(inputs, -1); !errors.Is(err, ErrInput) {
				t.Errorf("negative tolerance: %v", err)
			}
		})
	}
	plain := openT(t, bundleDir(t))
	if _, err := plain.ProjectRouted(make([]float32, plain.Dim()), 0.1); !errors.Is(err, ErrInput) {
		t.Errorf("a bundle without a routed teacher: %v", err)
	}
}
