package h2l

import (
	"fmt"
	"math"

	ort "github.com/yalue/onnxruntime_go"
)

// Model is one model of a bundle with its checked session. Its Project holds the bundle's read lock,
// so Bundle.Close waits for calls in flight and later calls get ErrClosed.
type Model struct {
	Name    string
	Entry   ModelEntry
	dim     int
	input   string
	outputs []TensorSpec
	session *ort.DynamicAdvancedSession
	bundle  *Bundle
}

// Projection is the result for a batch, row-major. Projected is [Batch, dim]; RoutingWeights is
// [Batch, n_heads] for the teacher. For the routed teacher TopHeads and TopWeights are [Batch, K] and
// NeglectedMass is [Batch]: the softmax mass its K candidates left out, a proven upper bound for
// router "screen", an estimate for "ivf" (Model.Bound says which). Floats and Ints hold every output.
type Projection struct {
	Batch          int
	Projected      []float32
	RoutingWeights []float32
	TopHeads       []int64
	TopWeights     []float32
	NeglectedMass  []float32
	Floats         map[string][]float32
	Ints           map[string][]int64
}

func specOf(info ort.InputOutputInfo) TensorSpec {
	dtype := fmt.Sprint(info.DataType)
	switch info.DataType {
	case ort.TensorElementDataTypeFloat:
		dtype = "float32"
	case ort.TensorElementDataTypeInt64:
		dtype = "int64"
	}
	shape := make([]any, len(info.Dimensions))
	for i, d := range info.Dimensions {
		if d < 0 {
			shape[i] = "?"
		} else {
			shape[i] = d
		}
	}
	return TensorSpec{Name: info.Name, Dtype: dtype, Shape: shape}
}

// contractEqual compares session specs with the manifest's; onnxruntime_go reports symbolic dims as -1
// without their names, so a symbolic manifest dim must meet a -1 there.
func contractEqual(got []TensorSpec, want []TensorSpec) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].Name != want[i].Name || got[i].Dtype != want[i].Dtype || len(got[i].Shape) != len(want[i].Shape) {
			return false
		}
		for j, w := range want[i].Shape {
			g := got[i].Shape[j]
			switch wv := w.(type) {
			case string:
				if g != "?" {
					return false
				}
			case float64:
				if gi, ok := g.(int64); !ok || float64(gi) != wv {
					return false
				}
			default:
				return false
			}
		}
	}
	return true
}

func openModel(name string, e ModelEntry, data []byte, dim int) (*Model, error) {
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
	for i, x := range ins {
		gotIn[i] = specOf(x)
	}
	for i, x := range outs {
		gotOut[i] = specOf(x)
	}
	if !contractEqual(gotIn, e.Inputs) || !contractEqual(gotOut, e.Outputs) {
		return nil, wrap(ErrContract, "%s: session %v -> %v disagrees with manifest %v -> %v", name, gotIn, gotOut, e.Inputs, e.Outputs)
	}
	if len(ins) != 1 || len(ins[0].Dimensions) != 2 || ins[0].Dimensions[1] != int64(dim) || gotIn[0].Dtype != "float32" {
		return nil, wrap(ErrContract, "%s: expected one float32 [batch, %d] input, got %v", name, dim, gotIn)
	}
	outNames := make([]string, len(outs))
	for i, o := range outs {
		outNames[i] = o.Name
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{ins[0].Name}, outNames, opts)
	if err != nil {
		return nil, wrap(ErrRuntime, "%s: %w", e.File, err)
	}
	return &Model{Name: name, Entry: e, dim: dim, input: ins[0].Name, outputs: gotOut, session: sess}, nil
}

// Project runs one query (dim floats) or a batch (batch*dim floats, row-major).
// Calling it on a nil *Model (e.g. Student() of a teacher-only bundle) returns ErrInput; after the
// bundle's Close it returns ErrClosed.
func (m *Model) Project(q []float32) (*Projection, error) {
	if m == nil {
		return nil, wrap(ErrInput, "no such model in this bundle (Student() is nil for a teacher-only bundle)")
	}
	if len(q) == 0 || len(q)%m.dim != 0 {
		return nil, wrap(ErrInput, "%d floats is not a whole number of %d-dimensional queries", len(q), m.dim)
	}
	for i, x := range q {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, wrap(ErrInput, "query %d contains NaN or Inf", i/m.dim)
		}
	}
	batch := len(q) / m.dim
	in, err := ort.NewTensor(ort.NewShape(int64(batch), int64(m.dim)), append([]float32(nil), q...))
	if err != nil {
		return nil, wrap(ErrRuntime, "%w", err)
	}
	defer in.Destroy()
	outs := make([]ort.Value, len(m.outputs))
	m.bundle.mu.RLock()
	defer m.bundle.mu.RUnlock()
	if m.bundle.closed {
		return nil, wrap(ErrClosed, "%s: Project after Close", m.Name)
	}
	if err := m.session.Run([]ort.Value{in}, outs); err != nil {
		return nil, wrap(ErrRuntime, "%w", err)
	}
	defer func() {
		for _, v := range outs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	res := &Projection{Batch: batch, Floats: map[string][]float32{}, Ints: map[string][]int64{}}
	for i, v := range outs {
		name := m.outputs[i].Name
		switch t := v.(type) {
		case *ort.Tensor[float32]:
			res.Floats[name] = append([]float32(nil), t.GetData()...)
		case *ort.Tensor[int64]:
			res.Ints[name] = append([]int64(nil), t.GetData()...)
		default:
			return nil, wrap(ErrRuntime, "output %s is neither float32 nor int64", name)
		}
	}
	res.Projected, res.RoutingWeights = res.Floats["projected_embedding"], res.Floats["routing_weights"]
	res.TopHeads, res.TopWeights = res.Ints["top_heads"], res.Floats["top_weights"]
	res.NeglectedMass = res.Floats["neglected_mass_bound"]
	if res.NeglectedMass == nil {
		res.NeglectedMass = res.Floats["neglected_mass_estimate"]
	}
	return res, nil
}
