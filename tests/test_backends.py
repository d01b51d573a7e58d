"""The numba backend against the numpy reference (itself checked against PyTorch): every
kernel, on odd shapes and batch 1, and whole training runs."""

import numpy as np
import pytest

pytest.importorskip("numba")

from edgekd.kernels import backend
from edgekd.nn.model import Sequential

RTOL, ATOL = 2e-4, 2e-5
NP, NB = backend._numpy(), backend._numba()


def close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=what)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("n,fin,fout", [(1, 1, 1), (1, 7, 3), (5, 13, 11), (32, 64, 32)])
@pytest.mark.parametrize("code", [0, 1, 2, 3])
def test_dense(n, fin, fout, code):
    rng = np.random.default_rng(n * 100 + fin + code)
    x, w, b = rand(rng, n, fin), rand(rng, fin, fout), rand(rng, fout)
    outs = []
    for K in (NP, NB):
        y = np.empty((n, fout), np.float32)
        K.dense_forward(x, w, b, code, y)
        dy = rand(np.random.default_rng(1), n, fout)
        dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
        K.dense_backward(x, w, y, dy, code, dw, db, dx)
        outs.append((y, dw, db, dx))
    for name, a, b_ in zip(("y", "dw", "db", "dx"), *outs):
        close(a, b_, name)


@pytest.mark.parametrize("n,h,w,c,kh,kw,sh,sw,f", [
    (1, 1, 9, 3, 1, 3, 1, 2, 4), (2, 7, 5, 2, 3, 2, 2, 1, 5), (3, 8, 8, 1, 3, 3, 1, 1, 2),
    (1, 5, 5, 4, 5, 5, 1, 1, 3)])
@pytest.mark.parametrize("code", [0, 1, 3])
def test_conv2d(n, h, w, c, kh, kw, sh, sw, f, code):
    rng = np.random.default_rng(h * w + c + code)
    x, k, b = rand(rng, n, h, w, c), rand(rng, kh, kw, c, f), rand(rng, f)
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    outs = []
    for K in (NP, NB):
        y = np.empty((n, ho, wo, f), np.float32)
        K.conv2d_forward(x, k, b, sh, sw, code, y)
        dy = rand(np.random.default_rng(2), n, ho, wo, f)
        dk, db, dx = np.empty_like(k), np.empty_like(b), np.empty_like(x)
        K.conv2d_backward(x, k, y, dy, sh, sw, code, dk, db, dx)
        outs.append((y, dk, db, dx))
    for name, a, b_ in zip(("y", "dk", "db", "dx"), *outs):
        close(a, b_, name)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("ph,pw,sh,sw", [(1, 2, 1, 2), (2, 2, 2, 2), (3, 3, 2, 2), (1, 3, 1, 1)])
def test_pools(ph, pw, sh, sw, ties):
    """Both backends against each other, and max pooling's winner (the first maximum of each
    window, as np.argmax picks it) against the windows themselves; `ties`: small integers."""
    rng = np.random.default_rng(ph * 10 + pw)
    x = rng.integers(0, 3, (2, 7, 9, 3)).astype(np.float32) if ties else rand(rng, 2, 7, 9, 3)
    ho, wo = (7 - ph) // sh + 1, (9 - pw) // sw + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (ph, pw), axis=(1, 2))[:, ::sh, ::sw]
    win = win[:, :ho, :wo].reshape(2, ho, wo, 3, ph * pw)
    res = []
    for K in (NP, NB):
        y, arg = np.empty((2, ho, wo, 3), np.float32), np.empty((2, ho, wo, 3), np.int64)
        K.maxpool2d_forward(x, ph, pw, sh, sw, y, arg)
        y_infer = np.empty_like(y)
        K.maxpool2d_max(x, ph, pw, sh, sw, y_infer)
        assert np.array_equal(y_infer, y)
        dy = rand(np.random.default_rng(3), 2, ho, wo, 3)
        dx = np.empty_like(x)
        K.maxpool2d_backward(arg, ph, pw, sh, sw, dy, dx)
        ya, dxa = np.empty_like(y), np.empty_like(x)
        K.avgpool2d_forward(x, ph, pw, sh, sw, ya)
        K.avgpool2d_backward(ph, pw, sh, sw, dy, dxa)
        res.append((y, arg, dx, ya, dxa))
    for name, a, b in zip(("max", "arg", "dmax", "avg", "davg"), *res):
        close(a, b, name)
    assert np.array_equal(res[0][1], win.argmax(-1)) and np.array_equal(res[0][0], win.max(-1))


def test_the_loss_exponential_is_exp_to_float32_round_off():
    """numba's KD loss computes its exponentials with its own vectorisable expf: within
    2e-7 relative of exp (float64) over the whole range a softmax feeds it, 1 at 0, and the
    same bits whatever the array's length or offset (no fast-math in it)."""
    from edgekd.kernels.numba_twins import _exp_nonpositive_
    x = np.concatenate([-np.linspace(0, 87, 200_001), -np.geomspace(1e-12, 1, 1001)])
    x = x.astype(np.float32)
    e = x.copy()
    _exp_nonpositive_(e, np.empty(len(e), np.int32))
    ref = np.exp(x.astype(np.float64))
    assert np.max(np.abs(e - ref) / ref) < 2e-7 and e[0] == 1
    assert np.all(np.diff(e[:200_001]) <= 0)            # monotone, as exp is
    for start in range(1, 9):                           # another split into vector lanes
        part = x[start:start + 1001].copy()
        _exp_nonpositive_(part, np.empty(len(part), np.int32))
        assert np.array_equal(part, e[start:start + 1001])


@pytest.mark.parametrize("n,c", [(1, 2), (7, 10), (32, 5)])
@pytest.mark.parametrize("T,alpha", [(1.0, 0.0), (4.0, 0.9), (2.0, 1.0)])
def test_kd_loss(n, c, T, alpha):
    rng = np.random.default_rng(n + c)
    s, t = rand(rng, n, c) * 3, rand(rng, n, c) * 3
    y = rng.integers(0, c, n)
    out = []
    for K in (NP, NB):
        g, kl = np.empty((n, c), np.float32), np.empty(n, np.float32)
        loss = K.kd_loss_grad(s, t, y, T, alpha, g, kl)
        out.append((np.float32(loss), g, kl))
    for name, a, b in zip(("loss", "grad", "kl"), *out):
        close(a, b, name)


def test_optimizer_updates():
    rng = np.random.default_rng(0)
    for args in ((0.1, 0.9, 0.01, True), (0.05, 0.0, 0.0, False)):
        p0, g = rand(rng, 37), rand(rng, 37)
        res = []
        for K in (NP, NB):
            p, buf = p0.copy(), np.zeros(37, np.float32)
            for step in range(3):
                K.sgd_update(p, g, buf, *args[:3], args[3], step == 0)
            res.append(p)
        close(*res, "sgd")
    for decoupled in (False, True):
        p0, g = rand(rng, 37), rand(rng, 37)
        res = []
        for K in (NP, NB):
            p, m, v = p0.copy(), np.zeros(37, np.float32), np.zeros(37, np.float32)
            for step in range(1, 4):
                K.adam_update(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, 0.01, step, decoupled)
            res.append(p)
        close(*res, "adam")


SPECS = [
    {"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "dense", "units": 32, "activation": "relu"}, {"type": "dense", "units": 10}]},
    {"input_shape": [30, 3], "num_classes": 5, "layers": [
        {"type": "conv1d", "filters": 8, "kernel_size": 5, "stride": 2, "padding": "same", "activation": "relu"},
        {"type": "maxpool1d", "pool_size": 2},
        {"type": "conv1d", "filters": 6, "kernel_size": 3, "activation": "tanh"},
        {"type": "avgpool1d", "pool_size": 2}, {"type": "flatten"}, {"type": "dense", "units": 5}]},
    {"input_shape": [9, 9, 2], "num_classes": 4, "layers": [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu6"},
        {"type": "maxpool2d", "pool_size": 2}, {"type": "global_avgpool"}, {"type": "dense", "units": 4}]},
]


@pytest.mark.parametrize("spec", SPECS, ids=["mlp", "conv1d", "conv2d"])
@pytest.mark.parametrize("opt", ["adam", "nesterov"])
def test_training_runs_agree(spec, opt):
    from edgekd.distill.optim import make_optimizer
    from edgekd.distill.steps import kd_step
    rng = np.random.default_rng(5)
    shape, c = tuple(spec["input_shape"]), spec["num_classes"]
    batches = [(rand(rng, b, *shape), rand(rng, b, c) * 3, rng.integers(0, c, b)) for b in (8, 1, 5, 8)]
    final = []
    try:
        for name in ("numpy", "numba"):
            backend.select(name)
            m = Sequential(spec, seed=3)
            o = make_optimizer(opt, m.trainables(), 0.01)
            for x, t, y in batches:
                kd_step(m, o, x, t, y, 4.0, 0.9)
            final.append(m.flat_params.copy())
    finally:
        backend.select("numpy")
    close(*final, "weights after training")
