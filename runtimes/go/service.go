package h2l

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ServiceOptions configures NewService.
type ServiceOptions struct {
	// PublicKey, when set, makes every load and reload go through OpenVerified: a republished bundle
	// that is unsigned or signed by another key is refused and the current one keeps serving.
	PublicKey ed25519.PublicKey
	// Interval is how often the folder is checked for a republished bundle; 0 turns polling off
	// (call Reload yourself).
	Interval time.Duration
	// OnError receives reload failures (the current bundle keeps serving) and errors from closing a
	// drained bundle. It is called from the polling goroutine; it may be nil.
	OnError func(error)
}

// Service serves a bundle folder that may be republished while it runs (h2l export --force renames a
// new folder into place). Reload opens the new bundle beside the current one and swaps an atomic
// pointer: calls in flight finish on the old sessions, new calls get the new bundle, and the old
// bundle closes when its last call returns (reference counted).
type Service struct {
	dir     string
	opts    ServiceOptions
	cur     atomic.Pointer[version]
	live    atomic.Int64 // versions opened and not yet closed
	mu      sync.Mutex   // serialises Reload and Close
	gen     uint64
	closed  bool
	stop    chan struct{}
	stopped chan struct{}
}

// version is one opened bundle with its reference count: 1 for being current, plus 1 per lease.
type version struct {
	svc    *Service
	bundle *Bundle
	gen    uint64
	refs   atomic.Int64
}

// tryAcquire takes a reference unless the count already reached zero (the bundle is closing).
func (v *version) tryAcquire() bool {
	for {
		n := v.refs.Load()
		if n == 0 {
			return false
		}
		if v.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one closes the bundle and returns Close's error.
func (v *version) release() error {
	if v.refs.Add(-1) != 0 {
		return nil
	}
	err := v.bundle.Close()
	v.svc.live.Add(-1)
	return err
}

func (s *Service) report(err error) {
	if err != nil && s.opts.OnError != nil {
		s.opts.OnError(err)
	}
}

// Lease pins one bundle version: its sessions stay open until Release, whatever is republished.
type Lease struct {
	v    *version
	once sync.Once
}

// Bundle is the leased bundle. Its manifest and models stay valid until Release; its ReadFile reads
// the folder as it is now, which may hold a newer bundle.
func (l *Lease) Bundle() *Bundle { return l.v.bundle }

// Generation counts loads: 1 for the first bundle, +1 per swap.
func (l *Lease) Generation() uint64 { return l.v.gen }

// Release returns the lease; the last release of a replaced bundle closes it. Calling it twice is harmless.
func (l *Lease) Release() { l.once.Do(func() { l.v.svc.report(l.v.release()) }) }

// Answer is a Projection with the bundle version that computed it.
type Answer struct {
	*Projection
	TeacherSha256  string // manifest.teacher.sha256
	ManifestSha256 string
	Generation     uint64
}

// NewService opens the bundle at dir (verified against opts.PublicKey when set) and, when
// opts.Interval > 0, starts polling dir for a republished bundle.
func NewService(dir string, opts ServiceOptions) (*Service, error) {
	s := &Service{dir: dir, opts: opts, stop: make(chan struct{}), stopped: make(chan struct{})}
	b, err := s.open()
	if err != nil {
		return nil, err
	}
	s.install(b)
	if opts.Interval > 0 {
		go s.poll()
	} else {
		close(s.stopped)
	}
	return s, nil
}

func (s *Service) open() (*Bundle, error) {
	if s.opts.PublicKey != nil {
		return OpenVerified(s.dir, s.opts.PublicKey)
	}
	return Open(s.dir)
}

// install makes b current (caller holds s.mu or is NewService) and drops the old version's
// "current" reference, so it closes once drained.
func (s *Service) install(b *Bundle) {
	s.gen++
	v := &version{svc: s, bundle: b, gen: s.gen}
	v.refs.Store(1)
	s.live.Add(1)
	if old := s.cur.Swap(v); old != nil {
		s.report(old.release())
	}
}

func (s *Service) poll() {
	defer close(s.stopped)
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if _, err := s.Reload(); !errors.Is(err, ErrClosed) {
				s.report(err)
			}
		}
	}
}

// Reload checks the folder now: when manifest.json's bytes differ from the current bundle's, it opens
// (and, with a key, verifies) the new bundle and swaps it in. It reports whether it swapped. On error
// the current bundle keeps serving; a folder caught between the two renames of a republish reads as
// ErrMissing, and the next poll picks the bundle up.
func (s *Service) Reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, wrap(ErrClosed, "service closed")
	}
	cur := s.cur.Load().bundle.ManifestSha256
	if sum, err := manifestSha(s.dir); err != nil || sum == cur {
		return false, err
	}
	b, err := s.open()
	if err != nil {
		return false, err
	}
	if b.ManifestSha256 == cur { // republished back to the same bytes in between
		return false, b.Close()
	}
	s.install(b)
	return true, nil
}

func manifestSha(dir string) (string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", wrap(ErrMissing, "bundle folder %s: %w", dir, err)
	}
	defer root.Close()
	raw, err := readCapped(root, "manifest.json", MaxManifestBytes)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:]), nil
}

// Acquire leases the current bundle; Release it when done. After Close it returns ErrClosed.
func (s *Service) Acquire() (*Lease, error) {
	for {
		v := s.cur.Load()
		if v == nil {
			return nil, wrap(ErrClosed, "service closed")
		}
		if v.tryAcquire() {
			return &Lease{v: v}, nil
		}
		// v was replaced and drained between Load and tryAcquire: the new one is current now.
	}
}

// Project runs model ("teacher", "student", "routed") of the current bundle on q and says which
// bundle answered.
func (s *Service) Project(model string, q []float32) (*Answer, error) {
	l, err := s.Acquire()
	if err != nil {
		return nil, err
	}
	defer l.Release()
	b := l.Bundle()
	p, err := b.Model(model).Project(q)
	if err != nil {
		return nil, err
	}
	return &Answer{Projection: p, TeacherSha256: b.Manifest.Teacher.Sha256, ManifestSha256: b.ManifestSha256, Generation: l.v.gen}, nil
}

// Generation is the current bundle's load count (1 for the first).
func (s *Service) Generation() uint64 {
	if v := s.cur.Load(); v != nil {
		return v.gen
	}
	return 0
}

// Live counts opened bundles not yet closed: the current one plus replaced ones still draining.
func (s *Service) Live() int { return int(s.live.Load()) }

// Close stops polling and drops the current bundle: it closes now (and Close returns its error) or,
// with leases out, when the last is released. New calls get ErrClosed. A second Close returns nil.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	<-s.stopped
	if old := s.cur.Swap(nil); old != nil {
		return old.release()
	}
	return nil
}
