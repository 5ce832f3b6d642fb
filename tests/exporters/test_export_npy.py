"""--format npy: UnifyWeaver's layouts, little-endian float32 (d,), read back byte for byte."""

import json

import numpy as np

from h2l.cli import app
from h2l.importers.npy_dir import import_npy_dir


def test_npy_export_layouts_byte_for_byte(tmp_path, runner, teacher_npz, small_teacher):
    out = tmp_path / "npy"
    r = runner.invoke(app, ["export", "--format", "npy", str(teacher_npz), "--out", str(out),
                            "--mh-id", "3"])
    assert r.exit_code == 0, r.output
    d = small_teacher.dim
    from h2l.exporters.npy import file_ids

    for i, cid in enumerate(file_ids(small_teacher.cluster_ids)):  # ids "c0".. are numbered 1..N
        for name, vec in ((f"centroid_{cid}.npy", small_teacher.centroids[i]),
                          (f"answer_emb_{cid}.npy", small_teacher.answers[i]),
                          (f"mh_3_cluster_{cid}_centroid.npy", small_teacher.centroids[i]),
                          (f"mh_3_cluster_{cid}_answer.npy", small_teacher.answers[i])):
            raw = (out / name).read_bytes()
            assert raw[:6] == b"\x93NUMPY"
            header_len = int.from_bytes(raw[8:10], "little")
            header = raw[10:10 + header_len].decode()
            assert "'descr': '<f4'" in header and f"'shape': ({d},)" in header
            assert raw[10 + header_len:] == np.asarray(vec, "<f4").tobytes()
    meta = json.loads((out / "teacher.json").read_text())
    assert meta["temperature"] == small_teacher.temperature and meta["mh_id"] == 3
    back = import_npy_dir(out, small_teacher.temperature, mh_id=3)
    assert back.fingerprint() == small_teacher.fingerprint()


def test_npy_export_refuses_student_and_existing_dir(tmp_path, runner, teacher_npz):
    r = runner.invoke(app, ["export", "--format", "npy", str(teacher_npz), "--out", str(tmp_path),
                            "--student", "x.pt"])
    assert r.exit_code == 2 and "--format npy writes the teacher's vectors only; --student" in r.stderr
    r = runner.invoke(app, ["export", "--format", "npy", str(teacher_npz), "--out", str(tmp_path)])
    assert r.exit_code == 4 and "already exists" in r.stderr
