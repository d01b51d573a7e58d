"""benchmarks/serve_rate.py end to end in a tiny mode: a real `edgekd serve` host, one real
drain device and one real training device over loopback TCP. No timing is asserted: only that
every row ran, counted rows and bytes that the frames can account for, and that the ONNX copy
of the teacher was checked against edgekd's."""

import importlib.util
import json
import os
import subprocess
import sys

from edgekd.link import messages as m
from edgekd.data import load_dataset
from edgekd.link.codecs import affine8_params, soft_codec, x_codec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "serve_rate.py")
HAVE_ORT = all(importlib.util.find_spec(p) for p in ("onnx", "onnxruntime"))


def test_serve_rate_tiny_run(tmp_path):
    p = subprocess.run(
        [sys.executable, BENCH, "--sets", "digits", "--devices", "1", "--seconds", "0.3",
         "--warm", "1", "--teacher-epochs", "1", "--train-devices", "1", "--train-epochs", "1",
         "--backend", "numpy", "--workdir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    rows = res["rows"]
    want = {("edgekd-numpy", "drain"), ("edgekd-numpy", "train")}
    if HAVE_ORT:
        want.add(("onnxruntime", "drain"))
    assert {(r["teacher"], r["mode"]) for r in rows} == want
    # a full batch of 32 digits rows (u8 inputs, top-4 soft labels) is the cheapest per row;
    # a batch of one the dearest
    xc = x_codec("u8", 64, affine8_params(load_dataset("digits").x_train))
    sc = soft_codec("topk", 10, 4)
    cheapest, dearest = m.batch_nbytes(32, xc, sc) / 32, m.batch_nbytes(1, xc, sc)
    for r in rows:
        assert r["devices"] == 1 and r["rows"] > 0 and r["rows_per_s"] > 0
        assert cheapest * r["rows"] <= r["bytes_down"] <= dearest * r["rows"], r
        assert abs(r["mb_per_s"] * r["seconds"] * 1e6 - r["bytes_down"]) < 1
    train = next(r for r in rows if r["mode"] == "train")
    assert train["rows"] >= 1294 * 0.5   # one epoch of digits' training ids, halting aside
    if HAVE_ORT:
        ort = next(r for r in rows if r["teacher"] == "onnxruntime")
        assert "agrees with edgekd's" in " ".join(res["notes"])
        if ort.get("ort_over_edgekd") is not None:
            assert ort["ort_over_edgekd"] > 0
