// Command h2l-go smoke-runs and times a bundle from Go.
//
//	h2l-go BUNDLE            run every golden vector, print the max abs diff per model/output
//	h2l-go -bench N BUNDLE   also time N single-query and N batch-32 calls per model (JSON lines)
//	h2l-go --public-key KEY.pub BUNDLE   open only a bundle whose manifest.sig that key made
//	h2l-go ask [--model M] [--no-embedding] [--public-key KEY.pub] BUNDLE TEXT...
//	                         one JSON line per text on stdout: text, top_cluster, top_weight, answer,
//	                         embedding, truncated (needs a bundle exported with --with-encoder)
//
// Exit codes (as the h2l CLI): 2 usage, 3 input (bad key file), 5 integrity (signature refused, sha256,
// manifest, unsafe path, external data),
// 6 parity (a golden vector differs), 7 onnxruntime, 8 missing dependency (libonnxruntime).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	h2l "github.com/h2l-dev/h2l/runtimes/go"
)

var (
	errUsage  = errors.New("usage")
	errParity = errors.New("golden vector differs")
)

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		msg := err.Error()
		if !strings.Contains(msg, "fix:") {
			msg += ". fix: " + fixFor(err)
		}
		fmt.Fprintln(os.Stderr, "error:", msg)
	}
	os.Exit(exitCode(err))
}

func exitCode(err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, h2l.ErrInput), errors.Is(err, h2l.ErrPublicKey), errors.Is(err, h2l.ErrNoEncoder):
		return 3
	case errors.Is(err, errParity):
		return 6
	case errors.Is(err, h2l.ErrLibrary):
		return 8
	case errors.Is(err, h2l.ErrRuntime):
		return 7
	default: // manifest, checksum, missing file, unsafe path, contract, schema version
		return 5
	}
}

func fixFor(err error) string {
	switch {
	case errors.Is(err, h2l.ErrLibrary):
		return "set ORT_DYLIB_PATH to libonnxruntime.so (h2l ort-lib prints it)"
	case errors.Is(err, h2l.ErrSignature):
		return "sign the bundle with the pinned key (h2l sign DIR --key KEY) or pin the publisher's KEY.pub"
	case errors.Is(err, h2l.ErrNoEncoder):
		return "export the bundle with h2l export --with-encoder"
	case errors.Is(err, h2l.ErrInput), errors.Is(err, h2l.ErrPublicKey):
		return "check the input"
	case errors.Is(err, h2l.ErrRuntime):
		return "check that this onnxruntime runs the bundle (h2l verify)"
	default:
		return "re-export the bundle with h2l export, or point at the right folder"
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "ask" {
		return runAsk(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("h2l-go", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bench := fs.Int("bench", 0, "time N calls per model and batch size")
	keyFile := fs.String("public-key", "", "KEY.pub: refuse a bundle not signed by this ed25519 key (exit 5)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v. fix: h2l-go [-bench N] [--public-key KEY.pub] BUNDLE", errUsage, err)
	}
	if fs.NArg() != 1 || *bench < 0 {
		return fmt.Errorf("%w: one BUNDLE folder and -bench >= 0 expected. fix: h2l-go [-bench N] [--public-key KEY.pub] BUNDLE", errUsage)
	}
	b, err := openBundle(fs.Arg(0), *keyFile)
	if err != nil {
		return err
	}
	defer b.Close()
	inputs, rows, err := b.Golden()
	if err != nil {
		return err
	}
	d := b.Dim()
	fmt.Fprintf(stdout, "opened %s: N = %d, d = %d, %d golden queries\n", fs.Arg(0), b.Manifest.Teacher.NHeads, d, rows)
	if r := b.Routed(); r != nil {
		fmt.Fprintf(stdout, "routed teacher: router %s, K = %d, neglected mass is %s\n", r.Entry.Router, r.Candidates(),
			map[string]string{"proven": "a proven bound", "estimate": "an estimate"}[r.Bound()])
	}
	failed := 0
	for _, name := range []string{"teacher", "student", "routed"} {
		if _, present := b.Manifest.Golden.Outputs[name]; !present || b.Model(name) == nil {
			continue
		}
		got, err := b.Model(name).Project(inputs)
		if err != nil {
			return err
		}
		diffs, err := b.GoldenDiff(name, got)
		if err != nil {
			return err
		}
		outs := make([]string, 0, len(diffs))
		for out := range diffs {
			outs = append(outs, out)
		}
		sort.Strings(outs)
		for _, out := range outs {
			status := "ok"
			if diffs[out] > b.Manifest.Golden.Atol {
				status, failed = "FAIL", failed+1
			}
			fmt.Fprintf(stdout, "%s.%s: max abs diff %.3e %s\n", name, out, diffs[out], status)
		}
	}
	if *bench > 0 {
		if err := timeModels(b, inputs, rows, *bench, stdout); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d golden outputs exceed atol %g. fix: re-export the bundle with this onnxruntime", errParity, failed, b.Manifest.Golden.Atol)
	}
	return nil
}

// runAsk prints exactly one JSON line per text on stdout, in input order, and nothing else.
func runAsk(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("h2l-go ask", flag.ContinueOnError)
	fs.SetOutput(stderr)
	model := fs.String("model", "", "teacher, student or routed (default: the student when the bundle has one, else the teacher)")
	noEmb := fs.Bool("no-embedding", false, "leave the query embedding out of each line")
	keyFile := fs.String("public-key", "", "KEY.pub: refuse a bundle not signed by this ed25519 key (exit 5)")
	usage := "fix: h2l-go ask [--model teacher|student|routed] [--no-embedding] [--public-key KEY.pub] BUNDLE TEXT..."
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v. %s", errUsage, err, usage)
	}
	if fs.NArg() < 2 {
		return fmt.Errorf("%w: a BUNDLE and at least one TEXT are needed. %s", errUsage, usage)
	}
	switch *model {
	case "", "teacher", "student", "routed":
	default:
		return fmt.Errorf("%w: --model %q is not teacher, student or routed. %s", errUsage, *model, usage)
	}
	b, err := openBundle(fs.Arg(0), *keyFile)
	if err != nil {
		return err
	}
	defer b.Close()
	res, err := b.Ask(fs.Args()[1:], *model)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	for _, r := range res {
		if *noEmb {
			r.Embedding = nil
		}
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// openBundle opens dir, through OpenVerified when a key file is given (no unsigned fallback).
func openBundle(dir, keyFile string) (*h2l.Bundle, error) {
	if keyFile == "" {
		return h2l.Open(dir)
	}
	key, err := h2l.LoadPublicKey(keyFile)
	if err != nil {
		return nil, err
	}
	return h2l.OpenVerified(dir, key)
}

func timeModels(b *h2l.Bundle, inputs []float32, rows, n int, stdout io.Writer) error {
	d := b.Dim()
	for _, name := range []string{"teacher", "student", "routed"} {
		m := b.Model(name)
		if m == nil {
			continue
		}
		for _, batch := range []int{1, 32} {
			q := make([]float32, 0, batch*d)
			for i := 0; i < batch; i++ {
				r := i % rows
				q = append(q, inputs[r*d:(r+1)*d]...)
			}
			for i := 0; i < 50 && i < n; i++ {
				if _, err := m.Project(q); err != nil {
					return err
				}
			}
			times := make([]float64, n)
			for i := range times {
				t0 := time.Now()
				if _, err := m.Project(q); err != nil {
					return err
				}
				times[i] = float64(time.Since(t0).Nanoseconds()) / 1e3
			}
			sort.Float64s(times)
			p50 := times[len(times)/2]
			fmt.Fprintf(stdout, "{\"runtime\": \"go\", \"model\": \"%s\", \"batch\": %d, \"p50_us\": %.2f, \"per_query_us\": %.3f}\n",
				name, batch, p50, p50/float64(batch))
		}
	}
	return nil
}
