"""The one deterministic .npz writer and the one PNG writer: equal content gives equal bytes."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest

from h2l.writers import npz_bytes, png_bytes


@pytest.mark.parametrize("compress", [False, True])
def test_npz_bytes_are_deterministic_and_readable(compress):
    arrays = {"texts": np.array(["b", "a"]), "vectors": np.arange(6, dtype=np.float32).reshape(2, 3)}
    first = npz_bytes(arrays, compress=compress)
    time.sleep(2.1)  # zip timestamps have 2 s resolution: a stamped clock would show here
    assert npz_bytes(arrays, compress=compress) == first
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert [i.filename for i in zf.infolist()] == ["texts.npy", "vectors.npy"]
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED}
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with np.load(io.BytesIO(first), allow_pickle=False) as z:
        np.testing.assert_array_equal(z["vectors"], arrays["vectors"])
        assert list(z["texts"]) == ["b", "a"]


def test_npz_bytes_never_pickles():
    with pytest.raises(ValueError, match="pickle"):
        npz_bytes({"obj": np.array([{"a": 1}], dtype=object)})


def test_png_bytes_are_deterministic_without_software_stamp():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def draw() -> bytes:
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([1, 2, 3], [3, 1, 2])
        data = png_bytes(fig)
        plt.close(fig)
        return data
    a = draw()
    assert a[:8] == b"\x89PNG\r\n\x1a\n" and a == draw()
    assert b"Software" not in a and b"matplotlib" not in a.lower()
