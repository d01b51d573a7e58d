"""Oracle tests: the KD loss, cross-entropy and the optimizers against PyTorch.

The KD oracle is written from the definition with torch ops
    L = alpha * T^2 * KL(p(t/T) || p(s/T)) [batchmean] + (1 - alpha) * CE(s, y)
and its gradient comes from autograd. Optimizers are compared with torch.optim fed the same
gradient sequence; an end-to-end run trains the same MLP in both for a few steps.

Tolerances: rtol=1e-4, atol=1e-5 (float32 round-off) everywhere. Parameter trajectories are
also compared as displacements p - p0 (rtol=1e-4, atol=1e-6) so that a wrong update is not
hidden under the size of the weights themselves.
"""

import math

import numpy as np
import pytest
from oracle import ATOL, RTOL, check, seed_of, torch, torch_float32  # noqa: F401

from edgekd.distill.losses import cross_entropy, kd_loss
from edgekd.distill.optim import make_optimizer
from edgekd.nn.model import Sequential

F = torch.nn.functional


def t32(a, grad=False):
    return torch.tensor(np.asarray(a, np.float32), requires_grad=grad)


def kd_oracle(s, t, y, T, alpha):
    """(loss, dL/ds, per-sample KL) from torch, as specified."""
    st = t32(s, grad=True)
    log_ps = F.log_softmax(st / T, dim=1)
    log_pt = F.log_softmax(t32(t) / T, dim=1)
    kd = F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")
    loss = alpha * T * T * kd + (1 - alpha) * F.cross_entropy(st, torch.tensor(y))
    loss.backward()
    kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="none").sum(dim=1)
    return loss, st.grad, kl


def check_kd(s, t, y, T, alpha):
    r = kd_loss(s.copy(), t.copy(), y.copy(), temperature=T, alpha=alpha)
    loss, grad, kl = kd_oracle(s, t, y, T, alpha)
    assert isinstance(r.loss, float) and math.isfinite(r.loss)
    check(r.loss, loss, "loss")
    assert r.grad.dtype == np.float32 and r.kl.dtype == np.float32
    check(r.grad, grad, "grad")
    check(r.kl, kl, "per-sample kl")
    assert np.all(r.kl >= 0)
    np.testing.assert_array_equal(r.agree, s.argmax(1) == t.argmax(1))
    assert r.agree.shape == (s.shape[0],)
    return r


SHAPES = [(1, 2), (1, 10), (7, 10), (32, 3), (5, 101)]


@pytest.mark.parametrize("T", [1, 2, 4, 10])
@pytest.mark.parametrize("alpha", [0, 0.5, 0.9, 1])
@pytest.mark.parametrize("shape", SHAPES)
def test_kd_loss(T, alpha, shape):
    rng = np.random.default_rng(seed_of(T, alpha, shape))
    s = (rng.standard_normal(shape) * 3).astype(np.float32)
    t = (rng.standard_normal(shape) * 3).astype(np.float32)
    y = rng.integers(0, shape[1], shape[0])
    check_kd(s, t, y, T, alpha)


@pytest.mark.parametrize("T", [1, 2, 4, 10])
@pytest.mark.parametrize("alpha", [0, 0.5, 0.9, 1])
@pytest.mark.parametrize("case", ["spread", "offset", "teacher_only", "equal"])
def test_kd_loss_extreme_logits(T, alpha, case):
    """Logits at the +-1e4 scale: no overflow, no NaN from 0 * log 0, still equal to torch."""
    rng = np.random.default_rng(seed_of(T, alpha, case))
    shape = (6, 10)
    s = rng.standard_normal(shape)
    t = rng.standard_normal(shape)
    if case == "spread":
        s, t = s * 1e4, t * 1e4
    elif case == "offset":         # softmax is shift-invariant; a huge common offset is harmless
        s, t = s + 1e4, t - 1e4
    elif case == "teacher_only":   # confident teacher, ordinary student
        t = t * 1e4
    else:                          # identical extreme logits: KL exactly 0
        s = t = t * 1e4
    s, t = s.astype(np.float32), t.astype(np.float32)
    y = rng.integers(0, shape[1], shape[0])
    r = check_kd(s, t, y, T, alpha)
    if case == "equal":
        np.testing.assert_array_equal(r.kl, 0)


def test_kd_loss_gradient_formula_matches_design():
    """dL/ds = [a*T*(p_S^T - p_T^T) + (1-a)*(p_S - onehot)] / B, as losses.py documents."""
    rng = np.random.default_rng(5)
    s, t = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((4, 6)).astype(np.float32)
    y = rng.integers(0, 6, 4)
    T, a = 3.0, 0.7
    p = torch.softmax
    want = (a * T * (p(t32(s) / T, 1) - p(t32(t) / T, 1))
            + (1 - a) * (p(t32(s), 1) - F.one_hot(torch.tensor(y), 6))) / 4
    check(kd_loss(s, t, y, T, a).grad, want, "grad")


@pytest.mark.parametrize("shape", SHAPES + [(3, 1000)])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_cross_entropy(shape, scale):
    rng = np.random.default_rng(seed_of(shape, scale))
    s = (rng.standard_normal(shape) * scale).astype(np.float32)
    y = rng.integers(0, shape[1], shape[0])
    loss, grad = cross_entropy(s.copy(), y)
    st = t32(s, grad=True)
    lt = F.cross_entropy(st, torch.tensor(y))
    lt.backward()
    assert math.isfinite(loss)
    assert grad.dtype == np.float32
    check(loss, lt, "loss")
    check(grad, st.grad, "grad")


# ----------------------------------------------------------------------------- optimizers

PARAM_SHAPES = [(3, 5), (7,), (1,), (2, 3, 4)]
GRAD_SCALES = [1.0, 0.1, 1e-6, 10.0]    # 1e-6: sqrt(v) near eps, exercises Adam's denominator

OPT_CASES = ([("sgd", m, wd) for m in (0.0, 0.9) for wd in (0.0, 0.01)]
             + [("nesterov", 0.9, wd) for wd in (0.0, 0.01)]
             + [(name, 0.9, wd) for name in ("adam", "adamw") for wd in (0.0, 0.01)])


def torch_optimizer(name, params, lr, wd, momentum):
    if name in ("sgd", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=name == "nesterov",
                               weight_decay=wd)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)


@pytest.mark.parametrize("name,momentum,wd", OPT_CASES)
def test_optimizer_vs_torch(name, momentum, wd):
    rng = np.random.default_rng(seed_of(name, momentum, wd))
    lr = 0.1 if name in ("sgd", "nesterov") else 0.05
    p0 = [(rng.standard_normal(s) * 2).astype(np.float32) for s in PARAM_SHAPES]
    params = [p.copy() for p in p0]
    grads = [np.zeros_like(p) for p in p0]
    opt = make_optimizer(name, list(zip(params, grads)), lr, weight_decay=wd, momentum=momentum)
    tparams = [t32(p, grad=True) for p in p0]
    topt = torch_optimizer(name, tparams, lr, wd, momentum)
    for step in range(8):
        gs = [(rng.standard_normal(p.shape) * sc).astype(np.float32)
              for p, sc in zip(p0, GRAD_SCALES)]
        for g, gnew, tp in zip(grads, gs, tparams):
            g[...] = gnew                 # the optimizer holds these arrays: fill in place
            tp.grad = t32(gnew)
        opt.step()
        topt.step()
        for i, (p, tp, start) in enumerate(zip(params, tparams, p0)):
            assert p.dtype == np.float32
            check(p, tp, f"param {i} after step {step + 1}")
            check(p - start, tp.detach().numpy() - start, f"displacement {i} step {step + 1}",
                  atol=1e-6)
    assert opt.t == 8


# ----------------------------------------------------------------------------- end to end

MLP_SPEC = {"input_shape": [64], "num_classes": 10,
            "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                       {"type": "dense", "units": 10}]}


@pytest.mark.parametrize("name,lr,wd,T,alpha", [
    ("adam", 1e-2, 0.0, 4.0, 0.9),
    ("adamw", 1e-2, 0.01, 2.0, 0.5),
    ("nesterov", 0.1, 0.01, 4.0, 0.9),
])
def test_end_to_end_kd_training(name, lr, wd, T, alpha):
    rng = np.random.default_rng(seed_of(name))
    model = Sequential(MLP_SPEC, seed=11)
    for layer in model.layers:   # non-zero biases so every parameter's path matters
        layer.params["bias"][...] = (rng.standard_normal(layer.params["bias"].shape) * 0.1)
    tm = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    with torch.no_grad():
        for lin, layer in zip((tm[0], tm[2]), model.layers):
            lin.weight.copy_(t32(layer.params["kernel"]).T)
            lin.bias.copy_(t32(layer.params["bias"]))
    opt = make_optimizer(name, model.trainables(), lr, weight_decay=wd, momentum=0.9)
    topt = torch_optimizer(name, list(tm.parameters()), lr, wd, 0.9)
    batches = []
    for b in (16, 16, 1, 7, 16):
        batches.append(((rng.standard_normal((b, 64))).astype(np.float32),
                        (rng.standard_normal((b, 10)) * 3).astype(np.float32),
                        rng.integers(0, 10, b)))
    for step, (x, t, y) in enumerate(batches):
        r = kd_loss(model.forward(x, training=True), t, y, temperature=T, alpha=alpha)
        model.backward(r.grad)
        opt.step()
        topt.zero_grad()
        log_ps = F.log_softmax(tm(t32(x)) / T, dim=1)
        log_pt = F.log_softmax(t32(t) / T, dim=1)
        loss = (alpha * T * T * F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")
                + (1 - alpha) * F.cross_entropy(tm(t32(x)), torch.tensor(y)))
        loss.backward()
        topt.step()
        check(r.loss, loss, f"loss step {step}")
    final = [tm[0].weight.T, tm[0].bias, tm[2].weight.T, tm[2].bias]
    for i, ((_, p, _), tp) in enumerate(zip(model.named_params(), final)):
        check(p, tp, f"final param {i}")
    x = batches[0][0]
    with torch.no_grad():
        check(model.predict(x), tm(t32(x)), "final logits")
