package h2l

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// republish replaces live with a copy of src the way h2l export --force does: stage a hidden folder,
// then either rename live aside, rename the stage in and delete the old folder (exchange=false), or
// swap the two in one renameat2(RENAME_EXCHANGE) and delete the old (exchange=true).
func republish(t testing.TB, src, live string, i int, exchange bool) {
	t.Helper()
	parent, name := filepath.Split(live)
	stage := filepath.Join(parent, fmt.Sprintf(".%s.%d.partial", name, i))
	copyTree(t, src, stage)
	if exchange {
		must(t, unix.Renameat2(unix.AT_FDCWD, stage, unix.AT_FDCWD, live, unix.RENAME_EXCHANGE))
		must(t, os.RemoveAll(stage))
		return
	}
	old := filepath.Join(parent, fmt.Sprintf(".%s.%d.old", name, i))
	must(t, os.Rename(live, old))
	must(t, os.Rename(stage, live))
	must(t, os.RemoveAll(old))
}

// waitFor polls cond for up to 20 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// variant is a valid bundle that differs from src only in its manifest's name (another manifest sha).
func variant(t testing.TB, src, name string) string {
	t.Helper()
	dir := copyDir(t, src)
	editManifest(t, dir, func(v map[string]any) { v["name"] = name })
	return dir
}

func TestReloadDrainsOldAndKeepsServingOnBadBundle(t *testing.T) {
	src := bundleDir(t)
	live := filepath.Join(t.TempDir(), "bundle")
	copyTree(t, src, live)
	svc, err := NewService(live, ServiceOptions{})
	must(t, err)
	defer func() { must(t, svc.Close()) }()
	inputs, _, err := svc.cur.Load().bundle.Golden()
	must(t, err)

	old, err := svc.Acquire()
	must(t, err)
	republish(t, variant(t, src, "second"), live, 1, false)
	swapped, err := svc.Reload()
	if err != nil || !swapped || svc.Generation() != 2 || svc.Live() != 2 {
		t.Fatalf("reload: swapped=%v err=%v gen=%d live=%d", swapped, err, svc.Generation(), svc.Live())
	}
	if _, err := old.Bundle().Teacher().Project(inputs); err != nil {
		t.Fatalf("a lease on the old bundle must keep working after the swap: %v", err)
	}
	ans, err := svc.Project("teacher", inputs)
	if err != nil || ans.Generation != 2 || ans.ManifestSha256 == old.Bundle().ManifestSha256 {
		t.Fatalf("new calls must use the new bundle: %+v %v", ans, err)
	}
	oldBundle := old.Bundle()
	old.Release()
	old.Release() // twice is harmless
	if svc.Live() != 1 {
		t.Fatalf("the old bundle must close once drained, live=%d", svc.Live())
	}
	if _, err := oldBundle.Teacher().Project(inputs); !errors.Is(err, ErrClosed) {
		t.Fatalf("drained bundle still open: %v", err)
	}

	if swapped, err := svc.Reload(); swapped || err != nil {
		t.Fatalf("nothing changed, yet swapped=%v err=%v", swapped, err)
	}
	bad := variant(t, src, "third")
	p := filepath.Join(bad, "student.onnx")
	data, err := os.ReadFile(p)
	must(t, err)
	data[len(data)/2] ^= 1
	must(t, os.WriteFile(p, data, 0o644))
	republish(t, bad, live, 2, true)
	if swapped, err := svc.Reload(); swapped || !errors.Is(err, ErrChecksum) {
		t.Fatalf("a corrupt republish must be refused: swapped=%v err=%v", swapped, err)
	}
	if ans, err := svc.Project("teacher", inputs); err != nil || ans.Generation != 2 {
		t.Fatalf("the current bundle must keep serving after a refused reload: %v", err)
	}
	must(t, os.RemoveAll(live))
	if swapped, err := svc.Reload(); swapped || !errors.Is(err, ErrMissing) {
		t.Fatalf("a folder caught between renames: swapped=%v err=%v", swapped, err)
	}
	must(t, svc.Close())
	if svc.Live() != 0 {
		t.Fatalf("Close must close the last bundle, live=%d", svc.Live())
	}
	if _, err := svc.Project("teacher", inputs); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestReloadRechecksSignature(t *testing.T) {
	src := bundleDir(t)
	pub, priv := testKey(t, "owner")
	_, other := testKey(t, "someone else")
	live := filepath.Join(t.TempDir(), "bundle")
	copyTree(t, src, live)
	if _, err := NewService(live, ServiceOptions{PublicKey: pub}); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("an unsigned first bundle must be refused: %v", err)
	}
	signDir(t, live, priv)
	svc, err := NewService(live, ServiceOptions{PublicKey: pub})
	must(t, err)
	defer func() { must(t, svc.Close()) }()

	unsigned := variant(t, src, "unsigned")
	republish(t, unsigned, live, 1, false)
	if swapped, err := svc.Reload(); swapped || !errors.Is(err, ErrNoSignature) {
		t.Fatalf("unsigned republish: swapped=%v err=%v", swapped, err)
	}
	foreign := variant(t, src, "foreign")
	signDir(t, foreign, other)
	republish(t, foreign, live, 2, true)
	if swapped, err := svc.Reload(); swapped || !errors.Is(err, ErrWrongKey) {
		t.Fatalf("republish signed by another key: swapped=%v err=%v", swapped, err)
	}
	if svc.Generation() != 1 {
		t.Fatalf("a refused bundle was swapped in (generation %d)", svc.Generation())
	}
	good := variant(t, src, "good")
	signDir(t, good, priv)
	republish(t, good, live, 3, false)
	if swapped, err := svc.Reload(); !swapped || err != nil || svc.Generation() != 2 {
		t.Fatalf("signed republish: swapped=%v err=%v", swapped, err)
	}
}

// expected holds one bundle version's golden vectors, read from its source folder before the test.
type expected struct {
	inputs  []float32
	outputs map[string]map[string][]float32 // model -> output -> values
	ref     []float32                       // its teacher's projection of the shared query (qA)
}

func loadExpected(t testing.TB, dir string, shared []float32) (string, expected) {
	t.Helper()
	b := openT(t, dir)
	inputs, _, err := b.Golden()
	must(t, err)
	e := expected{inputs: inputs, outputs: map[string]map[string][]float32{}}
	for model, outs := range b.Manifest.Golden.Outputs {
		e.outputs[model] = map[string][]float32{}
		for out, rel := range outs {
			raw, err := b.ReadFile(rel)
			must(t, err)
			_, vals, err := ParseNpyF32(raw)
			must(t, err)
			e.outputs[model][out] = vals
		}
		got, err := b.Model(model).Project(inputs)
		must(t, err)
		diffs, err := b.GoldenDiff(model, got)
		must(t, err)
		for out, d := range diffs {
			if d > 1e-5 {
				t.Fatalf("%s: %s.%s differs from golden by %g before the test", dir, model, out, d)
			}
		}
	}
	if shared == nil {
		shared = inputs
	}
	p, err := b.Teacher().Project(shared)
	must(t, err)
	e.ref = p.Projected
	return b.Manifest.Teacher.Sha256, e
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	return sorted[int(q*float64(len(sorted)-1))]
}

// K workers call the service without pause while the folder is republished 50 times, alternating two
// bundles with different teachers (H2L_BUNDLE, H2L_BUNDLE_B), by rename-aside and by RENAME_EXCHANGE.
// Half the workers lease a version and check every model against that version's golden vectors; half
// call Service.Project on one shared query and check the answer against the reference of the teacher
// sha256 it carries. Zero errors, zero mixed answers, generations never go back, old bundles drain.
func TestHotReloadUnderLoad(t *testing.T) {
	srcA := bundleDir(t)
	srcB := os.Getenv("H2L_BUNDLE_B")
	if srcB == "" {
		t.Skip("H2L_BUNDLE_B is not set: the hot-reload load test needs a second bundle with another teacher " +
			"(tests/test_runtimes_go.py passes the rt_bundle_b fixture)")
	}
	shaA, expA := loadExpected(t, srcA, nil)
	shaB, expB := loadExpected(t, srcB, expA.inputs)
	if shaA == shaB {
		t.Fatal("H2L_BUNDLE and H2L_BUNDLE_B have the same teacher")
	}
	exp := map[string]expected{shaA: expA, shaB: expB}
	shared := expA.inputs

	live := filepath.Join(t.TempDir(), "bundle")
	copyTree(t, srcA, live)
	var reloadErrs atomic.Int64
	svc, err := NewService(live, ServiceOptions{Interval: 5 * time.Millisecond, OnError: func(err error) {
		if !errors.Is(err, ErrMissing) { // the folder between two renames, or the old one being deleted
			t.Errorf("reload: %v", err)
		}
		reloadErrs.Add(1)
	}})
	must(t, err)

	batch := len(shared) / svc.cur.Load().bundle.Dim()
	const workers = 4
	var stop, republishing atomic.Bool
	var wg sync.WaitGroup
	lat := make([][]time.Duration, workers)  // Service.Project calls while republishing
	base := make([][]time.Duration, workers) // the same calls before the first republish
	served := make([]map[string]int, workers)
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		served[w] = map[string]int{}
		go func(w int) {
			defer wg.Done()
			lastGen := uint64(0)
			for !stop.Load() {
				t0 := time.Now()
				var sha string
				var gen uint64
				if w%2 == 0 {
					l, err := svc.Acquire()
					if err != nil {
						errs <- err
						return
					}
					b := l.Bundle()
					sha, gen = b.Manifest.Teacher.Sha256, l.Generation()
					e := exp[sha]
					for model, outs := range e.outputs {
						p, err := b.Model(model).Project(e.inputs)
						if err != nil {
							l.Release()
							errs <- err
							return
						}
						for out, want := range outs {
							if len(p.Floats[out]) != len(want) || maxAbs(p.Floats[out], want) > 1e-5 {
								l.Release()
								errs <- fmt.Errorf("mixed version: %s.%s of teacher %.8s differs from its golden", model, out, sha)
								return
							}
						}
					}
					l.Release()
				} else {
					ans, err := svc.Project("teacher", shared)
					if err != nil {
						errs <- err
						return
					}
					sha, gen = ans.TeacherSha256, ans.Generation
					if ref := exp[sha].ref; len(ans.Projected) != len(ref) || maxAbs(ans.Projected, ref) > 1e-6 {
						errs <- fmt.Errorf("mixed version: answer says teacher %.8s, values are another's", sha)
						return
					}
				}
				if w%2 == 1 {
					if republishing.Load() {
						lat[w] = append(lat[w], time.Since(t0))
					} else {
						base[w] = append(base[w], time.Since(t0))
					}
				}
				if gen < lastGen {
					errs <- fmt.Errorf("generation went back from %d to %d", lastGen, gen)
					return
				}
				lastGen = gen
				served[w][sha]++
			}
		}(w)
	}

	time.Sleep(time.Second) // baseline latency before any republish
	republishing.Store(true)
	const republishes = 50
	for i := 1; i <= republishes; i++ {
		src, sha := srcB, shaB
		if i%2 == 0 {
			src, sha = srcA, shaA
		}
		republish(t, src, live, i, i%2 == 0)
		waitFor(t, fmt.Sprintf("republish %d to be served", i), func() bool {
			l, err := svc.Acquire()
			if err != nil {
				return false
			}
			defer l.Release()
			return l.Bundle().Manifest.Teacher.Sha256 == sha
		})
		time.Sleep(20 * time.Millisecond) // let the workers run on this version
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if g := svc.Generation(); g != republishes+1 {
		t.Errorf("generation %d, want %d (one swap per republish)", g, republishes+1)
	}
	waitFor(t, "replaced bundles to drain", func() bool { return svc.Live() == 1 })
	must(t, svc.Close())
	if svc.Live() != 0 {
		t.Errorf("live bundles after Close: %d", svc.Live())
	}
	var all, baseline []time.Duration
	perSha := map[string]int{}
	for w := range lat {
		all, baseline = append(all, lat[w]...), append(baseline, base[w]...)
		for sha, n := range served[w] {
			perSha[sha] += n
		}
	}
	if perSha[shaA] == 0 || perSha[shaB] == 0 {
		t.Fatalf("both versions must have answered: %v", perSha)
	}
	if len(all) == 0 || len(baseline) == 0 {
		t.Fatal("no Service.Project calls timed")
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	sort.Slice(baseline, func(i, j int) bool { return baseline[i] < baseline[j] })
	p50, p99 := percentile(all, 0.50), percentile(all, 0.99)
	b50, b99 := percentile(baseline, 0.50), percentile(baseline, 0.99)
	t.Logf("%d workers, %d republishes, %d checked answers (A %d, B %d), 0 errors, 0 mixed; Service.Project (teacher, batch %d) "+
		"while republishing p50 %v p99 %v (%d calls), before p50 %v p99 %v (%d calls); %d transient reload reads",
		workers, republishes, perSha[shaA]+perSha[shaB], perSha[shaA], perSha[shaB], batch,
		p50, p99, len(all), b50, b99, len(baseline), reloadErrs.Load())
	if out := os.Getenv("H2L_RELOAD_REPORT"); out != "" {
		report, err := json.Marshal(map[string]any{"workers": workers, "republishes": republishes, "calls": len(all),
			"p50_us": p50.Microseconds(), "p99_us": p99.Microseconds(), "baseline_calls": len(baseline),
			"baseline_p50_us": b50.Microseconds(), "baseline_p99_us": b99.Microseconds(), "errors": 0, "mixed": 0})
		must(t, err)
		must(t, os.WriteFile(out, report, 0o644))
	}
}
