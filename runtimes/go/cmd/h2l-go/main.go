// Command h2l-go smoke-runs and times a bundle from Go.
//
//	h2l-go BUNDLE            run every golden vector, print the max abs diff per model/output
//	h2l-go BUNDLE -bench N   also time N single-query and N batch-32 calls per model (JSON lines)
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"time"

	h2l "github.com/h2l-dev/h2l/runtimes/go"
)

func main() {
	bench := flag.Int("bench", 0, "time N calls per model and batch size")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: h2l-go [-bench N] BUNDLE")
		os.Exit(2)
	}
	b, err := h2l.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(5)
	}
	defer b.Close()
	p, _ := b.Path(b.Manifest.Golden.Inputs)
	shape, inputs, err := h2l.ReadNpyF32(p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(5)
	}
	d := b.Dim()
	fmt.Printf("opened %s: N = %d, d = %d, %d golden queries\n", flag.Arg(0), b.Manifest.Teacher.NHeads, d, shape[0])
	ok := true
	for _, name := range []string{"teacher", "student"} {
		outs, present := b.Manifest.Golden.Outputs[name]
		if !present {
			continue
		}
		got, err := b.Model(name).Project(inputs)
		if err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(5)
		}
		for out, rel := range outs {
			rp, _ := b.Path(rel)
			_, want, err := h2l.ReadNpyF32(rp)
			if err != nil {
				fmt.Fprintln(os.Stderr, "error:", err)
				os.Exit(5)
			}
			have := got.Projected
			if out == "routing_weights" {
				have = got.RoutingWeights
			}
			diff := 0.0
			for i := range want {
				diff = math.Max(diff, math.Abs(float64(have[i]-want[i])))
			}
			pass := len(have) == len(want) && diff <= b.Manifest.Golden.Atol
			ok = ok && pass
			status := "ok"
			if !pass {
				status = "FAIL"
			}
			fmt.Printf("%s.%s: max abs diff %.3e %s\n", name, out, diff, status)
		}
	}
	for _, name := range []string{"teacher", "student"} {
		m := b.Model(name)
		if m == nil || *bench == 0 {
			continue
		}
		for _, batch := range []int{1, 32} {
			q := make([]float32, 0, batch*d)
			for i := 0; i < batch; i++ {
				r := i % shape[0]
				q = append(q, inputs[r*d:(r+1)*d]...)
			}
			for i := 0; i < 50 && i < *bench; i++ {
				m.Project(q)
			}
			times := make([]float64, *bench)
			for i := range times {
				t0 := time.Now()
				if _, err := m.Project(q); err != nil {
					fmt.Fprintln(os.Stderr, "error:", err)
					os.Exit(5)
				}
				times[i] = float64(time.Since(t0).Nanoseconds()) / 1e3
			}
			sort.Float64s(times)
			p50 := times[len(times)/2]
			fmt.Printf("{\"runtime\": \"go\", \"model\": \"%s\", \"batch\": %d, \"p50_us\": %.2f, \"per_query_us\": %.3f}\n",
				name, batch, p50, p50/float64(batch))
		}
	}
	if !ok {
		os.Exit(6)
	}
}
