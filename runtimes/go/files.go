package h2l

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// Caps applied before anything is parsed, so a hostile bundle cannot make Open read without bound.
const (
	MaxManifestBytes  = 16 << 20 // manifest.json
	MaxSignatureBytes = 4 << 10  // manifest.sig
	MaxJSONDepth      = 64       // nesting of manifest.json
)

// SafePath resolves a manifest path inside root; absolute paths, ".." and escaping symlinks are refused.
// Open itself reads through an os.Root with O_NOFOLLOW, so a path that passes here still cannot
// leave the folder or be a symlink when read.
func SafePath(root, rel string) (string, error) {
	if err := checkRel(rel); err != nil {
		return "", err
	}
	full := filepath.Join(root, filepath.FromSlash(rel))
	realRoot, err1 := filepath.EvalSymlinks(root)
	real, err2 := filepath.EvalSymlinks(full)
	if err1 == nil && err2 == nil {
		if r, err := filepath.Rel(realRoot, real); err != nil || r == ".." || strings.HasPrefix(r, "../") {
			return "", wrap(ErrUnsafePath, "%q resolves outside the bundle", rel)
		}
	}
	return full, nil
}

// checkRel refuses manifest paths that are empty, absolute, use backslashes or contain ., .. or //.
func checkRel(rel string) error {
	if rel == "" || strings.Contains(rel, "\\") || strings.ContainsRune(rel, 0) || path.IsAbs(rel) || filepath.IsAbs(rel) {
		return wrap(ErrUnsafePath, "%q", rel)
	}
	for _, part := range strings.Split(rel, "/") {
		if part == ".." || part == "." || part == "" {
			return wrap(ErrUnsafePath, "%q", rel)
		}
	}
	return nil
}

// openListed opens rel under root for reading: never through a symlink, never outside root, and only
// a regular file.
func openListed(root *os.Root, rel string) (*os.File, os.FileInfo, error) {
	if err := checkRel(rel); err != nil {
		return nil, nil, err
	}
	// os.Root resolves symlinks itself (within the root), so O_NOFOLLOW alone does not refuse an
	// in-folder link: Lstat first, then check the opened file is the one Lstat saw.
	name := filepath.FromSlash(rel)
	lst, err := root.Lstat(name)
	if err == nil && lst.Mode()&fs.ModeSymlink != 0 {
		return nil, nil, wrap(ErrUnsafePath, "%s is a symlink (bundles hold regular files only)", rel)
	}
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ELOOP):
			return nil, nil, wrap(ErrUnsafePath, "%s is a symlink (bundles hold regular files only)", rel)
		case errors.Is(err, fs.ErrNotExist):
			return nil, nil, wrap(ErrMissing, "%s (re-export the bundle): %w", rel, err)
		case strings.Contains(err.Error(), "escapes"):
			return nil, nil, wrap(ErrUnsafePath, "%s resolves outside the bundle: %w", rel, err)
		}
		return nil, nil, wrap(ErrMissing, "%s: %w", rel, err)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, nil, errors.Join(wrap(ErrMissing, "%s: %w", rel, err), f.Close())
	}
	if !st.Mode().IsRegular() {
		return nil, nil, errors.Join(wrap(ErrUnsafePath, "%s is not a regular file", rel), f.Close())
	}
	if lst == nil || !os.SameFile(lst, st) {
		return nil, nil, errors.Join(wrap(ErrUnsafePath, "%s changed while opened (replaced by a link?)", rel), f.Close())
	}
	return f, st, nil
}

// readCapped reads a whole small file (manifest, signature), refusing it above limit before reading.
func readCapped(root *os.Root, rel string, limit int64) ([]byte, error) {
	f, st, err := openListed(root, rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st.Size() > limit {
		return nil, wrap(ErrManifest, "%s is %d bytes, over the %d-byte cap", rel, st.Size(), limit)
	}
	raw, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, wrap(ErrMissing, "%s: %w", rel, err)
	}
	if int64(len(raw)) > limit {
		return nil, wrap(ErrManifest, "%s grew over the %d-byte cap while read", rel, limit)
	}
	return raw, nil
}

// hashFile streams rel's sha256 and size, checked against the manifest entry; keep returns the verified
// bytes (for models), so the session is built from what was hashed and the file is never reopened.
func hashFile(root *os.Root, rel, wantSha string, wantBytes int64, keep bool) ([]byte, error) {
	f, st, err := openListed(root, rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st.Size() != wantBytes {
		return nil, wrap(ErrChecksum, "bundle file %s is %d bytes, the manifest says %d (modified or corrupt)", rel, st.Size(), wantBytes)
	}
	h := sha256.New()
	var buf bytes.Buffer
	var w io.Writer = h
	if keep {
		buf.Grow(int(wantBytes))
		w = io.MultiWriter(h, &buf)
	}
	n, err := io.Copy(w, io.LimitReader(f, wantBytes+1))
	if err != nil {
		return nil, wrap(ErrMissing, "%s: %w", rel, err)
	}
	if n != wantBytes || hex.EncodeToString(h.Sum(nil)) != wantSha {
		return nil, wrap(ErrChecksum, "bundle file %s fails its sha256 check (modified or corrupt)", rel)
	}
	return buf.Bytes(), nil
}

// checkFiles verifies every listed file and returns the verified bytes of each model file, the
// tokenizer and the answers (what Open goes on to use, so none of it is read twice).
func checkFiles(root *os.Root, m Manifest) (map[string][]byte, error) {
	modelFiles := map[string]bool{}
	for _, e := range m.Models {
		modelFiles[e.File] = true
	}
	if m.Tokenizer != nil {
		modelFiles[m.Tokenizer.File] = true
	}
	if m.Answers != nil {
		modelFiles[m.Answers.File] = true
	}
	listed := map[string]bool{}
	verified := map[string][]byte{}
	for _, f := range m.Files {
		if listed[f.Path] {
			return nil, wrap(ErrManifest, "files lists %s twice", f.Path)
		}
		data, err := hashFile(root, f.Path, f.Sha256, f.Bytes, modelFiles[f.Path])
		if err != nil {
			return nil, err
		}
		if modelFiles[f.Path] {
			verified[f.Path] = data
		}
		listed[f.Path] = true
	}
	for _, rel := range m.referenced() {
		if !listed[rel] {
			return nil, wrap(ErrManifest, "%s is referenced but has no sha256 entry", rel)
		}
	}
	return verified, nil
}

// checkDepth refuses JSON nested deeper than MaxJSONDepth before it is decoded.
func checkDepth(raw []byte) error {
	depth, inString, escaped := 0, false, false
	for _, c := range raw {
		switch {
		case inString:
			if escaped {
				escaped = false
			} else if c == '\\' {
				escaped = true
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > MaxJSONDepth {
				return wrap(ErrManifest, "manifest.json nests deeper than %d levels", MaxJSONDepth)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}
