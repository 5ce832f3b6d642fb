package h2l

import "math"

// Bound says what a routed teacher's NeglectedMass is: "proven" (router screen: an upper bound on the
// flat teacher's softmax mass the candidates left out) or "estimate" (router ivf: nothing certifies
// it). Empty for models that are not routed.
func (m *Model) Bound() string {
	if m == nil {
		return ""
	}
	return m.Entry.Bound
}

// Candidates is K, the heads a routed teacher scores exactly per query (0 for other models).
func (m *Model) Candidates() int {
	if m == nil {
		return 0
	}
	return m.Entry.Candidates
}

// GuardedProjection is the result of ProjectRouted: per row, the routed teacher's answer, or the flat
// teacher's where the routed one's neglected mass exceeded the caller's tolerance.
type GuardedProjection struct {
	Batch         int
	Projected     []float32 // [Batch, dim]
	NeglectedMass []float32 // [Batch], from the routed teacher (before any fallback)
	FellBack      []bool    // [Batch]: this row is the flat teacher's
	Proven        bool      // NeglectedMass is a proven bound (router screen), not an estimate
}

// Fallbacks counts the rows the flat teacher answered.
func (g *GuardedProjection) Fallbacks() int {
	n := 0
	for _, f := range g.FellBack {
		if f {
			n++
		}
	}
	return n
}

// ProjectRouted runs the routed teacher and re-runs on the flat teacher, as one batch, every row whose
// neglected mass exceeds tolerance. With a proven bound, a routed row is within 2·bound·max‖a‖ of the
// flat teacher (docs/routing.md); with an ivf estimate the tolerance is a heuristic. A bundle without
// a routed teacher returns ErrInput.
func (b *Bundle) ProjectRouted(q []float32, tolerance float32) (*GuardedProjection, error) {
	r := b.Routed()
	if r == nil {
		return nil, wrap(ErrInput, "this bundle has no routed teacher (export it with h2l export --routed)")
	}
	if math.IsNaN(float64(tolerance)) || tolerance < 0 {
		return nil, wrap(ErrInput, "tolerance %g must be >= 0", tolerance)
	}
	p, err := r.Project(q)
	if err != nil {
		return nil, err
	}
	if len(p.NeglectedMass) != p.Batch || len(p.Projected) != p.Batch*b.Dim() {
		return nil, wrap(ErrContract, "routed teacher returned %d masses and %d floats for %d rows", len(p.NeglectedMass), len(p.Projected), p.Batch)
	}
	d := b.Dim()
	g := &GuardedProjection{Batch: p.Batch, Projected: p.Projected, NeglectedMass: p.NeglectedMass,
		FellBack: make([]bool, p.Batch), Proven: r.Bound() == "proven"}
	var rows []int
	var sub []float32
	for i, m := range p.NeglectedMass {
		if !(m <= tolerance) { // NaN falls back too
			rows = append(rows, i)
			sub = append(sub, q[i*d:(i+1)*d]...)
		}
	}
	if len(rows) == 0 {
		return g, nil
	}
	flat, err := b.Teacher().Project(sub)
	if err != nil {
		return nil, err
	}
	for k, i := range rows {
		copy(g.Projected[i*d:(i+1)*d], flat.Projected[k*d:(k+1)*d])
		g.FellBack[i] = true
	}
	return g, nil
}
