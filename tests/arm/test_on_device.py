"""The device path on the device's instruction set: run inside an ARM userland under
qemu-user by tests/arm/run, against references that the x86 side stored in $EDGEKD_ARM_REF.
(Memory is checked by tests/arm/crossisa.py: the device process net of the idle interpreter
under the same QEMU, since an RSS bar that counts the emulator means nothing.)"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cases

REF = Path(os.environ.get("EDGEKD_ARM_REF", "/nonexistent"))
TARGET = os.environ.get("EDGEKD_ARM_TARGET", "")
pytestmark = pytest.mark.skipif(not (REF / "meta.json").exists(),
                                reason="run by tests/arm/run inside an ARM userland")
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}


def meta():
    return json.loads((REF / "meta.json").read_text())


def edgekd(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], capture_output=True,
                       text=True, env=ENV, timeout=900, check=False)
    if check and p.returncode != 0:
        raise AssertionError(f"edgekd {' '.join(map(str, args))} failed: {p.stderr}")
    return p


def as_json(p):
    return json.loads(p.stdout.strip())


def test_this_is_the_target_instruction_set():
    import platform
    want = {"armv6": ("armv6l", "armv7l", "armv8l"), "aarch64": ("aarch64",)}[TARGET]
    assert platform.machine() in want and os.environ.get("QEMU_CPU")
    if TARGET == "armv6":
        assert np.dtype(np.intp).itemsize == 4  # the 32-bit index type the bugs came from


@pytest.mark.parametrize("name", ["digits", "sensor"])
def test_data_sets_load_and_describe(name, tmp_path):
    r = as_json(edgekd("data", name, "-o", tmp_path / f"{name}.npz", "--json"))
    want = meta()["data"][name]
    assert r["train_class_counts"] == want["train_class_counts"]
    assert sum(r["train_class_counts"]) == r["train"]
    from edgekd.data import load_dataset
    again = load_dataset(str(tmp_path / f"{name}.npz"))
    for key in ("x_train", "y_train", "x_test", "y_test"):
        import hashlib
        arr = getattr(again, key)
        assert hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() == want[key], key


@pytest.mark.parametrize("backend", ["numpy", "numba"] if TARGET == "aarch64" else ["numpy"])
def test_every_layer_and_a_kd_adam_step_match_x86(backend):
    from edgekd.kernels import backend as kb
    kb.select(backend)
    try:
        ref = dict(np.load(REF / "cases.npz"))
        bad = cases.compare(ref, cases.all_cases())
    finally:
        kb.select("numpy")
    assert not bad, f"differ from x86 beyond rtol {cases.RTOL} / atol {cases.ATOL}: {bad}"


def test_backend_auto_on_this_cpu(tmp_path):
    """armv6: Debian's numba is installed but llvmlite aborts on an ARM1176, so auto must fall
    back to numpy with a note (and --backend numba must fail in one line); aarch64: auto takes
    numba. Either way one epoch lands within 0.5 point of x86's numpy epoch."""
    args = ["train", "--student", REF / "student.json", "--teacher", REF / "teacher.npz",
            "--data", "digits", "--epochs", 1, "--json"]
    p = edgekd(*args, "--out", tmp_path / "auto")
    if TARGET == "armv6":
        assert "numba is installed but cannot start" in p.stderr and "using the numpy backend" in p.stderr
        bad = edgekd(*args, "--backend", "numba", "--out", tmp_path / "numba", check=False)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode != 0 and len(lines) == 1 and "cannot start" in lines[0]
        assert "Traceback" not in bad.stderr
    else:
        assert "cannot start" not in p.stderr
        from edgekd.kernels.backend import numba_status
        assert numba_status()[0], numba_status()
    assert abs(as_json(p)["test_accuracy"] - meta()["one_epoch"]["test_accuracy"]) <= 0.005


def test_trainer_halts_matches_x86_and_resumes_after_sigkill_to_the_same_weights(tmp_path):
    """One clean run (halting, accuracy, bytes) and the same run SIGKILLed after 3 epochs and
    resumed: the same weights, bit for bit, ARM to ARM."""
    args = ["train", "--student", REF / "student.json", "--teacher", REF / "teacher.npz",
            "--data", "digits", *cases.TRAIN_FLAGS]
    clean = as_json(edgekd(*args, "--out", tmp_path / "clean"))
    x86 = meta()["in_process"]
    assert abs(clean["test_accuracy"] - x86["test_accuracy"]) <= 0.005
    assert clean["settled_fraction"] > 0 and clean["bytes_down"] < clean["bytes_naive_run"]
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", *map(str, args), "--out", run],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    metrics, deadline = run / "metrics.jsonl", time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = as_json(edgekd(*args, "--out", run, "--resume"))
    assert resumed["weights_sha256"] == clean["weights_sha256"]
