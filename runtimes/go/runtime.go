package h2l

import (
	"os"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

var (
	libMu   sync.Mutex
	libPath string
)

// SetLibraryPath chooses the onnxruntime shared library before the first successful Open
// (default: $ORT_DYLIB_PATH). After a failed load it may be called again.
func SetLibraryPath(p string) {
	libMu.Lock()
	defer libMu.Unlock()
	libPath = p
}

// initRuntime loads onnxruntime once per process; a failed load is retried on the next Open.
func initRuntime() error {
	libMu.Lock()
	defer libMu.Unlock()
	if ort.IsInitialized() {
		return nil
	}
	p := libPath
	if p == "" {
		p = os.Getenv("ORT_DYLIB_PATH")
	}
	if p == "" {
		return wrap(ErrLibrary, "ORT_DYLIB_PATH is not set (point it at libonnxruntime.so.1.x)")
	}
	if st, err := os.Stat(p); err != nil || st.IsDir() {
		return wrap(ErrLibrary, "%s: no such file (set ORT_DYLIB_PATH to libonnxruntime.so.1.x)", p)
	}
	ort.SetSharedLibraryPath(p)
	if err := ort.InitializeEnvironment(); err != nil {
		return wrap(ErrLibrary, "%s: %w", p, err)
	}
	return nil
}

// singleThreadOptions are the session options every h2l model uses: one intra-op and one inter-op
// thread, so that services scale by calling from many goroutines. The caller destroys them.
func singleThreadOptions() (*ort.SessionOptions, error) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, wrap(ErrRuntime, "%w", err)
	}
	if err := opts.SetIntraOpNumThreads(1); err != nil {
		opts.Destroy()
		return nil, wrap(ErrRuntime, "%w", err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		opts.Destroy()
		return nil, wrap(ErrRuntime, "%w", err)
	}
	return opts, nil
}
