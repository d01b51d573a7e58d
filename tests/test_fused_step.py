"""The fused numba step (one compiled call per KD step) against the numpy layer-by-layer
reference: loss, per-sample KL, agreement, correct count, gradients and weights, on batches
of changing size, with and without BLAS, for every layer kind it fuses; and the cases where
it must step aside."""

import numpy as np
import pytest

pytest.importorskip("numba")

from edgekd.distill.fused import fused_kd_step
from edgekd.nn.program import program_of
from edgekd.distill.optim import make_optimizer
from edgekd.distill.steps import kd_step
from edgekd.kernels import backend, step_numba
from edgekd.nn.model import Sequential

RTOL, ATOL = 2e-4, 2e-5

SPECS = {
    "mlp": {"input_shape": [13], "num_classes": 6, "layers": [
        {"type": "dense", "units": 9, "activation": "tanh"},
        {"type": "dense", "units": 7, "activation": "relu6"}, {"type": "dense", "units": 6}]},
    # first conv narrow (direct loops), the second wide (im2col + sgemm when BLAS is there)
    "conv1d": {"input_shape": [23, 2], "num_classes": 5, "layers": [
        {"type": "conv1d", "filters": 6, "kernel_size": 3, "stride": 2, "padding": "same",
         "activation": "relu"},
        {"type": "conv1d", "filters": 5, "kernel_size": 4, "padding": "same", "activation": "tanh"},
        {"type": "conv1d", "filters": 4, "kernel_size": 2, "activation": "relu"},
        {"type": "maxpool1d", "pool_size": 2}, {"type": "avgpool1d", "pool_size": 2},
        {"type": "flatten"}, {"type": "dense", "units": 5}]},
    "conv2d": {"input_shape": [9, 8, 3], "num_classes": 4, "layers": [
        {"type": "conv2d", "filters": 5, "kernel_size": [3, 2], "stride": [2, 1], "padding": "same",
         "activation": "relu6"},
        {"type": "maxpool2d", "pool_size": 2, "stride": 1},
        {"type": "conv2d", "filters": 3, "kernel_size": 2, "activation": "relu"},
        {"type": "global_avgpool"}, {"type": "dense", "units": 4}]},
}


def train(spec, backend_name, opt_name, batches):
    backend.select(backend_name)
    m = Sequential(spec, seed=7)
    opt = make_optimizer(opt_name, m.trainables(), 0.05)
    results = []
    for x, t, y in batches:
        r = kd_step(m, opt, x, t, y, 4.0, 0.9)
        results.append((r.loss, r.kl.copy(), r.agree.copy(), r.correct, m.flat_grads.copy()))
    return m, opt, results


def batches_for(spec, sizes=(8, 1, 5, 8, 3)):
    rng = np.random.default_rng(11)
    shape, c = tuple(spec["input_shape"]), spec["num_classes"]
    return [(rng.standard_normal((b, *shape)).astype(np.float32),
             (rng.standard_normal((b, c)) * 3).astype(np.float32), rng.integers(0, c, b))
            for b in sizes]


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    yield tmp_path / "numba"
    backend.select("numpy")


CASES = [(name, opt, True) for name in SPECS for opt in ("sgd", "adamw")]
CASES += [("conv1d", "sgd", False), ("conv2d", "adamw", False)]  # the BLAS-free loops


@pytest.mark.parametrize("name,opt_name,blas", CASES)
def test_fused_matches_numpy(name, opt_name, blas, own_cache, monkeypatch):
    if blas and not step_numba.have_blas():
        pytest.skip("numba calls BLAS through SciPy, which is not installed")
    monkeypatch.setattr(step_numba, "have_blas", lambda: blas)
    spec = SPECS[name]
    batches = batches_for(spec)
    m_ref, _, ref = train(spec, "numpy", opt_name, batches)
    m, opt, got = train(spec, "numba", opt_name, batches)
    assert fused_kd_step(m, opt) is not None, "the numba backend took the fused path"
    for i, (a, b) in enumerate(zip(ref, got)):
        assert b[0] == pytest.approx(a[0], rel=RTOL, abs=ATOL), f"loss, step {i}"
        np.testing.assert_allclose(b[1], a[1], rtol=RTOL, atol=ATOL, err_msg=f"kl, step {i}")
        np.testing.assert_array_equal(b[2], a[2], err_msg=f"agree, step {i}")
        assert b[3] == a[3], f"correct, step {i}"
        np.testing.assert_allclose(b[4], a[4], rtol=RTOL, atol=ATOL, err_msg=f"grads, step {i}")
    np.testing.assert_allclose(m.flat_params, m_ref.flat_params, rtol=RTOL, atol=ATOL)
    assert opt.t == len(batches)


def test_steps_aside_when_it_cannot_fuse(own_cache):
    spec = {"input_shape": [6], "num_classes": 3, "layers": [
        {"type": "dense", "units": 4, "activation": "relu"}, {"type": "dropout", "rate": 0.2},
        {"type": "dense", "units": 3}]}
    backend.select("numba")
    m = Sequential(spec, seed=0)
    assert program_of(m) is None
    assert fused_kd_step(m, make_optimizer("sgd", m.trainables(), 0.1)) is None
    backend.select("numpy")
    m = Sequential(SPECS["mlp"], seed=0)
    assert fused_kd_step(m, make_optimizer("sgd", m.trainables(), 0.1)) is None


def test_generated_once_and_reused(own_cache):
    m = Sequential(SPECS["mlp"], seed=0)
    program = program_of(m)
    sizes = step_numba.compile_step(program, "sgd", 6, 13).sizes
    files = sorted(p.name for p in (own_cache / "edgekd-steps").glob("edgekd_step_*.py"))
    assert len(files) == 1
    stamp = (own_cache / "edgekd-steps" / files[0]).stat().st_mtime_ns
    step_numba._loaded.clear()
    step_numba.compile_step(program, "sgd", 6, 13)
    assert (own_cache / "edgekd-steps" / files[0]).stat().st_mtime_ns == stamp
    # the float workspace scales with the batch, give or take the cache-line padding of the
    # batch's own copy (two arrays, under 16 floats each)
    assert 4 * sizes(1)[0] - 64 < sizes(4)[0] <= 4 * sizes(1)[0]



RUN = """
import sys, tempfile
import numpy as np
pads = [np.empty(int(sys.argv[1]) + i, np.uint8) for i in range(50)]   # shift the heap
from edgekd.kernels import backend
backend.select("numba")
from edgekd.data import load_dataset
from edgekd.distill.config import TrainConfig
from edgekd.link.local import LocalSource
from edgekd.teachers import load_teacher
from edgekd.workflows import train_student
spec = {"input_shape": [64], "num_classes": 10, "layers": [
    {"type": "dense", "units": 24, "activation": "relu"}, {"type": "dropout", "rate": 0.1},
    {"type": "dense", "units": 10}]}
src = LocalSource(load_teacher(sys.argv[2]), load_dataset("digits"))
print(train_student(spec, src, TrainConfig(epochs=3), tempfile.mkdtemp())["weights_sha256"])
"""


def test_numba_weights_do_not_depend_on_the_heap(tmp_path):
    """fastmath lets LLVM peel a loop to an aligned address, which reorders float sums, so a
    batch or work array that lies elsewhere gave other weights. A model with dropout (the
    layer-by-layer path), in processes whose heaps differ, must give the same bits."""
    import subprocess
    import sys

    from edgekd.data import load_dataset
    from edgekd.workflows import train_teacher
    backend.select("numba")
    train_teacher({"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "dense", "units": 64, "activation": "relu"}, {"type": "dense", "units": 10}]},
        load_dataset("digits"), tmp_path / "t.npz", epochs=3)
    got = {subprocess.run([sys.executable, "-c", RUN, str(pad), str(tmp_path / "t.npz")],
                          capture_output=True, text=True, check=True).stdout.strip()
           for pad in (1, 3, 7, 13, 29)}
    backend.select("numpy")
    assert len(got) == 1, got
