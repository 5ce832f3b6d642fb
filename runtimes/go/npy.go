package h2l

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"strconv"
	"strings"
)

// ReadNpyF32 reads a little-endian float32 .npy (the format h2l writes): shape and row-major data.
func ReadNpyF32(p string) ([]int, []float32, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, wrap(ErrMissing, "%s: %v", p, err)
	}
	if len(raw) < 10 || !bytes.Equal(raw[:6], []byte("\x93NUMPY")) {
		return nil, nil, wrap(ErrInput, "%s: not a .npy file", p)
	}
	hlen, start := int(binary.LittleEndian.Uint16(raw[8:10])), 10
	if raw[6] >= 2 {
		if len(raw) < 12 {
			return nil, nil, wrap(ErrInput, "%s: truncated", p)
		}
		hlen, start = int(binary.LittleEndian.Uint32(raw[8:12])), 12
	}
	if start+hlen > len(raw) {
		return nil, nil, wrap(ErrInput, "%s: truncated header", p)
	}
	header := string(raw[start : start+hlen])
	if !strings.Contains(header, "'descr': '<f4'") || strings.Contains(header, "'fortran_order': True") {
		return nil, nil, wrap(ErrInput, "%s: not C-order little-endian float32", p)
	}
	i := strings.Index(header, "'shape': (")
	if i < 0 {
		return nil, nil, wrap(ErrInput, "%s: no shape", p)
	}
	rest := header[i+len("'shape': ("):]
	j := strings.Index(rest, ")")
	if j < 0 {
		return nil, nil, wrap(ErrInput, "%s: no shape", p)
	}
	var shape []int
	count := 1
	for _, s := range strings.Split(rest[:j], ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, nil, wrap(ErrInput, "%s: bad shape", p)
		}
		shape = append(shape, n)
		count *= n
	}
	body := raw[start+hlen:]
	if len(body) != 4*count {
		return nil, nil, wrap(ErrInput, "%s: data length does not match shape", p)
	}
	out := make([]float32, count)
	for k := range out {
		out[k] = math.Float32frombits(binary.LittleEndian.Uint32(body[4*k:]))
	}
	return shape, out, nil
}
