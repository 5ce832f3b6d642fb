package h2l

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"strconv"
	"strings"
)

// parseNpy splits a C-order little-endian .npy into its shape and body after checking descr
// ("<f4" or "<i8", 4 or 8 bytes per item) and that the body length matches the shape.
func parseNpy(raw []byte, descr string, itemSize int) ([]int, []byte, error) {
	if len(raw) < 10 || !bytes.Equal(raw[:6], []byte("\x93NUMPY")) {
		return nil, nil, wrap(ErrInput, "not a .npy file")
	}
	hlen, start := int(binary.LittleEndian.Uint16(raw[8:10])), 10
	if raw[6] >= 2 {
		if len(raw) < 12 {
			return nil, nil, wrap(ErrInput, ".npy truncated")
		}
		hlen, start = int(binary.LittleEndian.Uint32(raw[8:12])), 12
	}
	if hlen < 0 || start+hlen > len(raw) {
		return nil, nil, wrap(ErrInput, ".npy header truncated")
	}
	header := string(raw[start : start+hlen])
	if !strings.Contains(header, "'descr': '"+descr+"'") || strings.Contains(header, "'fortran_order': True") {
		return nil, nil, wrap(ErrInput, ".npy is not C-order %s (header %s)", descr, strings.TrimSpace(header))
	}
	i := strings.Index(header, "'shape': (")
	if i < 0 {
		return nil, nil, wrap(ErrInput, ".npy has no shape")
	}
	rest := header[i+len("'shape': ("):]
	j := strings.Index(rest, ")")
	if j < 0 {
		return nil, nil, wrap(ErrInput, ".npy has no shape")
	}
	var shape []int
	count := 1
	for _, s := range strings.Split(rest[:j], ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || (n > 0 && count > math.MaxInt32/n) {
			return nil, nil, wrap(ErrInput, ".npy has a bad shape %q", rest[:j])
		}
		shape = append(shape, n)
		count *= n
	}
	body := raw[start+hlen:]
	if len(body) != itemSize*count {
		return nil, nil, wrap(ErrInput, ".npy data length %d does not match shape %v", len(body), shape)
	}
	return shape, body, nil
}

// ParseNpyF32 decodes a little-endian float32 .npy (the format h2l writes): shape and row-major data.
func ParseNpyF32(raw []byte) ([]int, []float32, error) {
	shape, body, err := parseNpy(raw, "<f4", 4)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float32, len(body)/4)
	for k := range out {
		out[k] = math.Float32frombits(binary.LittleEndian.Uint32(body[4*k:]))
	}
	return shape, out, nil
}

// ParseNpyI64 decodes a little-endian int64 .npy (routed golden top_heads).
func ParseNpyI64(raw []byte) ([]int, []int64, error) {
	shape, body, err := parseNpy(raw, "<i8", 8)
	if err != nil {
		return nil, nil, err
	}
	out := make([]int64, len(body)/8)
	for k := range out {
		out[k] = int64(binary.LittleEndian.Uint64(body[8*k:]))
	}
	return shape, out, nil
}

// ReadNpyF32 reads a float32 .npy file.
func ReadNpyF32(p string) ([]int, []float32, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, wrap(ErrMissing, "%s: %w", p, err)
	}
	shape, data, err := ParseNpyF32(raw)
	if err != nil {
		return nil, nil, wrap(ErrInput, "%s: %w", p, err)
	}
	return shape, data, nil
}

// ReadNpyI64 reads an int64 .npy file.
func ReadNpyI64(p string) ([]int, []int64, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, wrap(ErrMissing, "%s: %w", p, err)
	}
	shape, data, err := ParseNpyI64(raw)
	if err != nil {
		return nil, nil, wrap(ErrInput, "%s: %w", p, err)
	}
	return shape, data, nil
}
