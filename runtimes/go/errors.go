package h2l

import (
	"errors"
	"fmt"
)

// Error kinds; match them with errors.Is.
var (
	ErrLibrary       = errors.New("onnxruntime library")
	ErrManifest      = errors.New("invalid manifest")
	ErrSchemaVersion = errors.New("unsupported manifest schema_version")
	ErrUnsafePath    = errors.New("unsafe path in manifest")
	ErrMissing       = errors.New("bundle file missing")
	ErrChecksum      = errors.New("sha256 mismatch")
	ErrContract      = errors.New("I/O contract mismatch")
	ErrInput         = errors.New("bad input")
	ErrRuntime       = errors.New("onnxruntime")
	ErrClosed        = errors.New("bundle closed")
)

// wrap prefixes kind; a %w in format wraps a cause too, so errors.Is reaches both.
func wrap(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{kind}, args...)...)
}

// ErrNoEncoder: the bundle has no encoder (export it with h2l export --with-encoder).
var ErrNoEncoder = errors.New("bundle has no encoder")
