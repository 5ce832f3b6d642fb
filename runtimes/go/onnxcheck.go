package h2l

import (
	"errors"
	"path"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Model file errors found before onnxruntime sees the bytes.
var (
	ErrModel        = errors.New("invalid ONNX model")
	ErrExternalData = errors.New("ONNX external data refused")
)

// ONNX protobuf field numbers (onnx.proto3) on the paths that can hold a TensorProto.
const (
	modelGraph, modelTrainingInfo, modelFunctions = 7, 20, 25
	graphNode, graphInitializer, graphSparseInit  = 1, 5, 15
	nodeAttribute                                 = 5
	attrT, attrG, attrTensors, attrGraphs         = 5, 6, 10, 11
	attrSparse, attrSparseTensors                 = 22, 23
	functionNode                                  = 7
	trainingInit, trainingAlgorithm               = 1, 2
	sparseValues, sparseIndices                   = 1, 2
	tensorExternalData, tensorDataLocation        = 13, 14
	entryKey, entryValue                          = 1, 2
	maxProtoDepth                                 = 64
)

type protoKind int

const (
	kModel protoKind = iota
	kGraph
	kNode
	kAttribute
	kFunction
	kTraining
	kSparse
	kTensor
)

// children maps a message kind to its sub-message fields that can lead to a TensorProto.
var children = map[protoKind]map[protowire.Number]protoKind{
	kModel:     {modelGraph: kGraph, modelTrainingInfo: kTraining, modelFunctions: kFunction},
	kGraph:     {graphNode: kNode, graphInitializer: kTensor, graphSparseInit: kSparse},
	kNode:      {nodeAttribute: kAttribute},
	kAttribute: {attrT: kTensor, attrG: kGraph, attrTensors: kTensor, attrGraphs: kGraph, attrSparse: kSparse, attrSparseTensors: kSparse},
	kFunction:  {functionNode: kNode},
	kTraining:  {trainingInit: kGraph, trainingAlgorithm: kGraph},
	kSparse:    {sparseValues: kTensor, sparseIndices: kTensor},
}

// checkModelBytes parses the ONNX protobuf wire format of a model file and refuses, before any session
// exists, a file that does not parse (truncated, not ONNX) and any tensor stored as external data:
// sessions are built from verified bytes, so weights read from other files would bypass the checks.
// The message names where such data points: outside the folder, inside but unlisted, or listed.
func checkModelBytes(file string, data []byte, listed map[string]bool) error {
	sawGraph := false
	err := walkProto(data, kModel, 0, func(kind protoKind, num protowire.Number, body []byte) error {
		if kind == kModel && num == modelGraph {
			sawGraph = true
		}
		return nil
	}, func(tensor []byte) error { return checkTensor(file, tensor, listed) })
	if err != nil {
		if errors.Is(err, ErrModel) && !strings.Contains(err.Error(), file) {
			return wrap(ErrModel, "%s: %w", file, err)
		}
		return err
	}
	if !sawGraph {
		return wrap(ErrModel, "%s has no graph (not an ONNX model, or truncated)", file)
	}
	return nil
}

func walkProto(b []byte, kind protoKind, depth int, visit func(protoKind, protowire.Number, []byte) error, tensor func([]byte) error) error {
	if depth > maxProtoDepth {
		return wrap(ErrModel, "protobuf nests deeper than %d levels", maxProtoDepth)
	}
	if kind == kTensor {
		return tensor(b)
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return wrap(ErrModel, "truncated or not an ONNX model: %w", protowire.ParseError(n))
		}
		b = b[n:]
		sub, isChild := children[kind][num]
		if isChild && typ == protowire.BytesType {
			body, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return wrap(ErrModel, "truncated or not an ONNX model: %w", protowire.ParseError(m))
			}
			if err := visit(kind, num, body); err != nil {
				return err
			}
			if err := walkProto(body, sub, depth+1, visit, tensor); err != nil {
				return err
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return wrap(ErrModel, "truncated or not an ONNX model: %w", protowire.ParseError(m))
		}
		b = b[m:]
	}
	return nil
}

// checkTensor refuses a TensorProto with data_location EXTERNAL or any external_data entry.
func checkTensor(file string, b []byte, listed map[string]bool) error {
	external, location := false, ""
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return wrap(ErrModel, "%s: truncated tensor: %w", file, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == tensorDataLocation && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return wrap(ErrModel, "%s: truncated tensor: %w", file, protowire.ParseError(m))
			}
			external = external || v != 0
			b = b[m:]
		case num == tensorExternalData && typ == protowire.BytesType:
			entry, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return wrap(ErrModel, "%s: truncated tensor: %w", file, protowire.ParseError(m))
			}
			external = true
			if k, v := stringEntry(entry); k == "location" {
				location = v
			}
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return wrap(ErrModel, "%s: truncated tensor: %w", file, protowire.ParseError(m))
			}
			b = b[m:]
		}
	}
	if !external {
		return nil
	}
	target := path.Join(path.Dir(file), location)
	switch {
	case location == "" || path.IsAbs(location) || strings.Contains(location, "\\") || target == ".." || strings.HasPrefix(target, "../"):
		return wrap(ErrExternalData, "%s: a tensor's external data points outside the bundle (%q)", file, location)
	case !listed[target]:
		return wrap(ErrExternalData, "%s: a tensor's external data %q is not listed in the manifest", file, location)
	default:
		return wrap(ErrExternalData, "%s: a tensor is stored as external data (%q); bundles embed weights in the model. fix: re-export the bundle", file, location)
	}
}

func stringEntry(b []byte) (key, value string) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return key, value
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == entryKey || num == entryValue) {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return key, value
			}
			if num == entryKey {
				key = string(v)
			} else {
				value = string(v)
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return key, value
		}
		b = b[m:]
	}
	return key, value
}
