"""The deterministic byte formats h2l writes: little-endian .npy, .npz with fixed timestamps, PNG without a run stamp.

Bytes only: writing them to disk atomically is :mod:`h2l.atomic`'s job.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def npy_bytes(arr: np.ndarray) -> bytes:
    """Little-endian .npy bytes (format 1.0), the layout Rust, Go and UnifyWeaver read: float32 (``<f4``), or
    int64 (``<i8``) for integer arrays such as the routed teacher's top_heads."""
    buf = io.BytesIO()
    dtype = "<i8" if np.asarray(arr).dtype.kind in "iu" else "<f4"
    np.lib.format.write_array(buf, np.ascontiguousarray(arr, dtype), version=(1, 0), allow_pickle=False)
    return buf.getvalue()


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes without the run-specific Software stamp (the one PNG writer)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray], *, compress: bool = False) -> bytes:
    """The one deterministic .npz writer: members in the given order, fixed timestamps, never pickled.

    Equal arrays give equal bytes (numpy's own savez stamps the current time into every member).
    """
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for key, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", _ZIP_DATE)
            info.compress_type = method
            zf.writestr(info, member.getvalue())
    return buf.getvalue()
