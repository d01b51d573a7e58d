"""Training steps built ahead of time (edgekd/kernels/aot.py): the same bits as numba's JIT
step, a warm `edgekd train` that never imports numba, and the ways a build is skipped or
fails without costing a run more than the JIT path."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

from edgekd.distill.optim import make_optimizer
from edgekd.distill.steps import kd_step
from edgekd.kernels import aot, backend, step_numba
from edgekd.nn.model import Sequential
from edgekd.nn.program import program_of

CONV = {"input_shape": [10, 9, 2], "num_classes": 4, "layers": [
    {"type": "conv2d", "filters": 6, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "maxpool2d", "pool_size": 2},
    {"type": "conv2d", "filters": 5, "kernel_size": 2, "activation": "relu6"},
    {"type": "flatten"}, {"type": "dense", "units": 7, "activation": "tanh"},
    {"type": "dense", "units": 4}]}


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    monkeypatch.setenv("EDGEKD_AOT", "1")
    step_numba._loaded.clear()
    yield tmp_path / "numba"
    step_numba._loaded.clear()
    backend.select("numpy")


def needs_toolchain():
    why = aot.unavailable()
    if why is not None:
        pytest.skip(f"no ahead-of-time builds here: {why}")


def train(opt_name):
    backend.select("numba")
    rng = np.random.default_rng(3)
    m = Sequential(CONV, seed=5)
    opt = make_optimizer(opt_name, m.trainables(), 0.01)
    out = []
    for n in (8, 3, 8, 1):
        x = rng.standard_normal((n, 10, 9, 2)).astype(np.float32)
        t = (rng.standard_normal((n, 4)) * 3).astype(np.float32)
        r = kd_step(m, opt, x, t, rng.integers(0, 4, n), 4.0, 0.9)
        out.append((r.loss, r.kl.copy(), r.agree.copy(), r.correct))
    return m, out, m.predict(rng.standard_normal((300, 10, 9, 2)).astype(np.float32))


def test_the_ahead_of_time_step_is_the_jit_step_bit_for_bit(own_cache, monkeypatch):
    """Here numba's JIT compiles the step against kernels it loaded from its disk cache, the
    build against kernels it compiled: per-element helpers are inlined either way
    (numba_twins.ELEMENT), so the two agree to the bit."""
    needs_toolchain()
    m, got, logits = train("adamw")
    assert m._compiled_forward.compiled.aot, "the step came from the ahead-of-time build"
    assert list((own_cache / "edgekd-steps" / "aot").glob("*/edgekd_step_*"))
    monkeypatch.setenv("EDGEKD_AOT", "0")
    step_numba._loaded.clear()
    m_jit, want, logits_jit = train("adamw")
    assert not m_jit._compiled_forward.compiled.aot
    for (a, b) in zip(got, want):
        assert (a[0], a[3]) == (b[0], b[3])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(m.flat_params, m_jit.flat_params)
    np.testing.assert_array_equal(logits, logits_jit)


RUN = """
import json, sys
from edgekd.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"numba_imported": "numba" in sys.modules, "code": code}), file=sys.stderr)
"""


def test_a_warm_train_run_never_imports_numba(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_AOT", "1")
    needs_toolchain()
    teacher_spec, student = tmp_path / "t.json", tmp_path / "s.json"
    teacher_spec.write_text(json.dumps({"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "dense", "units": 48, "activation": "relu"}, {"type": "dense", "units": 10}]}))
    student.write_text(json.dumps({"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "dense", "units": 24, "activation": "relu"}, {"type": "dense", "units": 10}]}))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "EDGEKD_AOT": "1"}
    subprocess.run([sys.executable, "-m", "edgekd", "teacher", "--spec", teacher_spec, "--data",
                    "digits", "--epochs", "2", "--backend", "numpy", "-o", tmp_path / "t.npz"],
                   check=True, capture_output=True, env=env, timeout=600)

    def run(name, aot_on):
        p = subprocess.run([sys.executable, "-c", RUN, "train", "--data", "digits", "--teacher",
                            tmp_path / "t.npz", "--student", student, "--epochs", "2",
                            "--backend", "numba", "--out", tmp_path / name, "--json"],
                           capture_output=True, text=True, timeout=900,
                           env={**env, "EDGEKD_AOT": "1" if aot_on else "0"})
        status = json.loads(p.stderr.strip().splitlines()[-1])
        assert status["code"] in (0, None), p.stderr
        return json.loads(p.stdout.strip().splitlines()[-1]), status["numba_imported"]

    cold, _ = run("cold", True)          # builds the teacher's forward and the student's step
    warm, imported = run("warm", True)
    assert not imported, "a warm start loads the ahead-of-time builds, not numba"
    jit, imported = run("jit", False)
    assert imported
    assert cold["weights_sha256"] == warm["weights_sha256"] == jit["weights_sha256"]
    assert cold["test_accuracy"] == warm["test_accuracy"] == jit["test_accuracy"]


def test_no_toolchain_or_switched_off_means_the_jit_cache(monkeypatch):
    monkeypatch.setenv("EDGEKD_AOT", "0")
    assert aot.unavailable() == "EDGEKD_AOT=0"
    assert aot.load("/nonexistent/edgekd_step_x.py", "edgekd_step_x") is None
    monkeypatch.setenv("EDGEKD_AOT", "1")
    monkeypatch.setattr(aot.shutil, "which", lambda name: None)
    assert aot.unavailable().startswith("no C compiler")


def test_a_failed_or_broken_build_is_remembered_and_training_goes_on(own_cache, monkeypatch):
    monkeypatch.setattr(aot, "unavailable", lambda: None)
    calls = []
    monkeypatch.setattr(aot, "_build", lambda src, out: calls.append(out) or "the compiler died")
    m = Sequential(CONV, seed=5)
    program = program_of(m)
    compiled = step_numba.compile_step(program, "sgd", 4, 180)
    assert not compiled.aot and compiled.step is not None
    step_numba._loaded.clear()
    step_numba.compile_step(program, "sgd", 4, 180)
    assert len(calls) == 1, "a failed build is not retried on every run"
    failed, = (own_cache / "edgekd-steps" / "aot").glob("*/*.failed")
    assert failed.read_text().strip() == "the compiler died"
    # a truncated module (a build killed mid-copy elsewhere, a full disk) is not loaded either
    forward_only = step_numba.compile_step(program, None, 4, 180)
    assert forward_only.step is None
    so = calls[-1]
    failed_fwd = os.path.join(os.path.dirname(so), os.path.basename(so).split(".")[0] + ".failed")
    os.remove(failed_fwd)
    with open(so, "wb") as f:
        f.write(b"\x7fELF garbage")
    step_numba._loaded.clear()
    again = step_numba.compile_step(program, None, 4, 180)
    assert not again.aot and again.forward is not None


def test_builds_are_kept_apart_per_cpu(monkeypatch):
    monkeypatch.delenv("QEMU_CPU", raising=False)
    monkeypatch.setattr(aot, "_cpu", lambda: "model name: one\nflags: sse2 avx2")
    keys = [aot.machine_key()]
    monkeypatch.setattr(aot, "_cpu", lambda: "model name: one\nflags: sse2")
    keys.append(aot.machine_key())
    monkeypatch.setenv("QEMU_CPU", "cortex-a53")
    keys.append(aot.machine_key())
    assert len(set(keys)) == 3
