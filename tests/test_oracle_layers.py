"""Oracle tests: every edgekd layer (and a whole Sequential) against PyTorch autograd.

For each case the torch op is built with the same weights (layouts transposed from edgekd's
channels-last / HWIO to torch's channels-first / OIHW), run on a requires_grad input, and
backpropagated with the same random upstream gradient. We compare forward output, dx and
every parameter gradient (and batchnorm running statistics) in float32.

Tolerances: rtol=1e-4, atol=1e-5 (float32 round-off; numpy and torch sum in different orders),
except dropout, which only multiplies by a mask and is checked to rtol=1e-6. Seeds are fixed per
case (crc32 of the parameters), so a pass or failure reproduces exactly.
"""

import math

import numpy as np
import pytest
from oracle import ATOL, RTOL, check, seed_of, torch, torch_float32  # noqa: F401

from edgekd.nn.layers import REGISTRY
from edgekd.nn.model import Sequential

F = torch.nn.functional

ACTS = ("relu", "relu6", "tanh", "none")


def t32(a, grad=False):
    return torch.tensor(np.asarray(a, np.float32), requires_grad=grad)


def rand(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def build(cfg, in_shape, seed):
    """A layer through the registry, initialised from a seeded generator; biases randomised
    (init leaves them at zero) so the bias path and activation masks are exercised."""
    layer = REGISTRY[cfg["type"]](dict(cfg), tuple(in_shape), "test")
    layer.allocate()
    rng = np.random.default_rng(seed)
    layer.init(rng)
    if "bias" in layer.params:
        layer.params["bias"][...] = rand(rng, layer.params["bias"].shape)
    return layer


def tf_same_pads(size, kernel, stride):
    """TensorFlow SAME padding for one axis, written out from its definition."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def torch_act(name, z):
    return {"relu": F.relu, "relu6": F.relu6, "tanh": torch.tanh, "none": lambda v: v}[name](z)


def run_pair(layer, x_np, torch_fn, seed, training=False):
    """Run edgekd forward/backward and the torch oracle with one random upstream gradient.
    torch_fn(x_tensor) -> (y_tensor, {param name: leaf tensor}). Returns (tensors, arrays)."""
    rng = np.random.default_rng(seed + 1000)
    y = layer.forward(x_np.copy(), training)
    dy = rand(rng, y.shape)
    dx = layer.backward(dy.copy())
    xt = t32(x_np, grad=True)
    yt, tparams = torch_fn(xt)
    yt.backward(t32(dy))
    check(y, yt, "forward")
    check(dx, xt.grad, "dx")
    for name, leaf in tparams.items():
        check(layer.grads[name], leaf.grad, f"grad {name}")
    assert set(tparams) == set(layer.params), "every parameter gradient is checked"
    return y, dx


# ---------------------------------------------------------------------------------- dense

@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("batch,fin,units", [(1, 5, 3), (4, 17, 9), (16, 64, 10), (3, 1, 1)])
def test_dense(act, batch, fin, units):
    seed = seed_of((act, batch, fin, units))
    layer = build({"type": "dense", "units": units, "activation": act}, (fin,), seed)
    assert layer.out_shape == (units,)
    x = rand(np.random.default_rng(seed), (batch, fin), 6.0 if act == "relu6" else 3.0)

    def oracle(xt):
        w = t32(layer.params["kernel"], grad=True)   # leaf in edgekd's [in, out] layout
        b = t32(layer.params["bias"], grad=True)
        return torch_act(act, F.linear(xt, w.T, b)), {"kernel": w, "bias": b}
    y, _ = run_pair(layer, x, oracle, seed, training=True)
    if act == "relu6" and y.size >= 30:
        assert (y == 6).any() and (y == 0).any(), "both relu6 clips are exercised"


# --------------------------------------------------------------------------------- conv2d

def conv2d_oracle(layer, act):
    (kh, kw, _, _) = layer.params["kernel"].shape
    stride = tuple(layer.stride)
    same = layer.cfg["padding"] == "same"

    def fn(xt):
        # HWIO -> OIHW; keep a leaf in HWIO so its .grad has edgekd's layout.
        k = t32(layer.params["kernel"], grad=True)
        b = t32(layer.params["bias"], grad=True)
        x = xt.permute(0, 3, 1, 2)                      # NHWC -> NCHW
        if same:
            pt, pb = tf_same_pads(x.shape[2], kh, stride[0])
            pl, pr = tf_same_pads(x.shape[3], kw, stride[1])
            x = F.pad(x, (pl, pr, pt, pb))
        z = F.conv2d(x, k.permute(3, 2, 0, 1), b, stride=stride)
        return torch_act(act, z).permute(0, 2, 3, 1), {"kernel": k, "bias": b}
    return fn


CONV2D_GEOM = [(k, s, p) for k in [(3, 3), (1, 3), (2, 2)]
               for s in [(1, 1), (2, 2), (2, 1)] for p in ("valid", "same")]


@pytest.mark.parametrize("kernel,stride,padding", CONV2D_GEOM)
@pytest.mark.parametrize("batch,hw,cin,filters", [(1, (7, 6), 3, 4), (3, (5, 8), 2, 5),
                                                  (2, (3, 3), 1, 1), (1, (6, 5), 1, 3)])
def test_conv2d_geometry(kernel, stride, padding, batch, hw, cin, filters):
    seed = seed_of((kernel, stride, padding, batch, hw))
    cfg = {"type": "conv2d", "filters": filters, "kernel_size": list(kernel),
           "stride": list(stride), "padding": padding}
    layer = build(cfg, hw + (cin,), seed)
    x = rand(np.random.default_rng(seed), (batch,) + hw + (cin,))
    y, _ = run_pair(layer, x, conv2d_oracle(layer, "none"), seed)
    if padding == "same":
        assert y.shape[1:3] == tuple(math.ceil(n / s) for n, s in zip(hw, stride))


def test_conv2d_same_odd_padding_is_tf_style():
    """Odd total SAME padding puts the extra zero at the end: with a 2x2 all-ones kernel,
    stride 1 on a 3x3 input, the last output row/column sees only the input's last row/col."""
    layer = build({"type": "conv2d", "filters": 1, "kernel_size": 2, "padding": "same"},
                  (3, 3, 1), 0)
    layer.params["kernel"][...] = 1
    layer.params["bias"][...] = 0
    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    y = layer.forward(x, False)[0, :, :, 0]
    want = np.array([[8, 12, 7], [20, 24, 13], [13, 15, 8]], np.float32)
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("batch,hw,kernel,stride", [(1, (5, 5), 3, 1), (4, (6, 7), 3, 2)])
def test_conv2d_activation(act, batch, hw, kernel, stride):
    seed = seed_of((act, batch, hw))
    cfg = {"type": "conv2d", "filters": 4, "kernel_size": kernel, "stride": stride,
           "padding": "same", "activation": act}
    layer = build(cfg, hw + (3,), seed)
    x = rand(np.random.default_rng(seed), (batch,) + hw + (3,), 6.0 if act == "relu6" else 3.0)
    y, _ = run_pair(layer, x, conv2d_oracle(layer, act), seed, training=True)
    if act == "relu6" and y.size >= 30:
        assert (y == 6).any() and (y == 0).any(), "both relu6 clips are exercised"


# --------------------------------------------------------------------------------- conv1d

def conv1d_oracle(layer, act):
    k = layer.params["kernel"].shape[0]
    stride = layer.stride[1]
    same = layer.cfg["padding"] == "same"

    def fn(xt):
        w = t32(layer.params["kernel"], grad=True)      # [k, cin, cout]
        b = t32(layer.params["bias"], grad=True)
        x = xt.permute(0, 2, 1)                          # NLC -> NCL
        if same:
            x = F.pad(x, tf_same_pads(x.shape[2], k, stride))
        z = F.conv1d(x, w.permute(2, 1, 0), b, stride=stride)
        return torch_act(act, z).permute(0, 2, 1), {"kernel": w, "bias": b}
    return fn


@pytest.mark.parametrize("kernel", [1, 2, 3, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("batch,length,cin,filters", [(1, 7, 3, 4), (4, 10, 2, 5), (2, 5, 1, 1)])
def test_conv1d_geometry(kernel, stride, padding, batch, length, cin, filters):
    seed = seed_of((kernel, stride, padding, batch, length))
    cfg = {"type": "conv1d", "filters": filters, "kernel_size": kernel, "stride": stride,
           "padding": padding}
    layer = build(cfg, (length, cin), seed)
    assert layer.params["kernel"].shape == (kernel, cin, filters)
    x = rand(np.random.default_rng(seed), (batch, length, cin))
    y, _ = run_pair(layer, x, conv1d_oracle(layer, "none"), seed)
    if padding == "same":
        assert y.shape[1] == math.ceil(length / stride)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("batch,length,stride", [(1, 9, 1), (5, 12, 2)])
def test_conv1d_activation(act, batch, length, stride):
    seed = seed_of((act, batch, length))
    cfg = {"type": "conv1d", "filters": 6, "kernel_size": 3, "stride": stride,
           "padding": "same", "activation": act}
    layer = build(cfg, (length, 4), seed)
    x = rand(np.random.default_rng(seed), (batch, length, 4), 3.0)
    run_pair(layer, x, conv1d_oracle(layer, act), seed, training=True)


# ---------------------------------------------------------------------------------- pools

@pytest.mark.parametrize("pool,stride", [((2, 2), None), ((3, 3), (1, 1)), ((3, 3), (2, 2)),
                                         ((2, 3), (1, 2)), ((3, 2), (2, 1)), ((1, 1), None),
                                         ((2, 2), (3, 3)), ((1, 2), (2, 3))])
@pytest.mark.parametrize("batch,hw,c", [(1, (7, 6), 3), (3, (5, 8), 2), (2, (3, 3), 1)])
def test_maxpool2d(pool, stride, batch, hw, c):
    if hw[0] < pool[0] or hw[1] < pool[1]:
        pytest.skip("pool larger than input")
    seed = seed_of((pool, stride, batch, hw))
    cfg = {"type": "maxpool2d", "pool_size": list(pool)}
    if stride is not None:
        cfg["stride"] = list(stride)
    layer = build(cfg, hw + (c,), seed)
    x = rand(np.random.default_rng(seed), (batch,) + hw + (c,))

    def oracle(xt):
        y = F.max_pool2d(xt.permute(0, 3, 1, 2), pool, stride or pool)
        return y.permute(0, 2, 3, 1), {}
    run_pair(layer, x, oracle, seed)


POOL1D = [(2, None), (3, 1), (3, 2), (2, 3), (4, 4), (1, None), (5, 2)]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("pool,stride", POOL1D)
@pytest.mark.parametrize("batch,length,c", [(1, 7, 3), (4, 10, 2), (2, 5, 1)])
def test_pool1d(kind, pool, stride, batch, length, c):
    seed = seed_of((kind, pool, stride, batch, length))
    cfg = {"type": f"{kind}pool1d", "pool_size": pool}
    if stride is not None:
        cfg["stride"] = stride
    layer = build(cfg, (length, c), seed)
    x = rand(np.random.default_rng(seed), (batch, length, c))
    fn = F.max_pool1d if kind == "max" else F.avg_pool1d

    def oracle(xt):
        return fn(xt.permute(0, 2, 1), pool, stride or pool).permute(0, 2, 1), {}
    run_pair(layer, x, oracle, seed)


@pytest.mark.parametrize("rank,pool,stride", [(1, 3, 1), (1, 2, 2), (2, (2, 2), (1, 1)),
                                              (2, (3, 2), (2, 1))])
def test_maxpool_ties_route_to_first(rank, pool, stride):
    """Integer inputs in {0, 1, 2} tie often; like torch, the gradient goes to the first maximum
    of each window (row-major within the window), accumulating across overlapping windows."""
    seed = seed_of(rank, pool, stride)
    shape = (3, 9, 4) if rank == 1 else (3, 7, 6, 2)
    typ = "maxpool1d" if rank == 1 else "maxpool2d"
    layer = build({"type": typ, "pool_size": pool, "stride": stride}, shape[1:], seed)
    x = np.random.default_rng(seed).integers(0, 3, shape).astype(np.float32)

    def oracle(xt):
        if rank == 1:
            return F.max_pool1d(xt.permute(0, 2, 1), pool, stride).permute(0, 2, 1), {}
        return F.max_pool2d(xt.permute(0, 3, 1, 2), pool, stride).permute(0, 2, 3, 1), {}
    run_pair(layer, x, oracle, seed)


@pytest.mark.parametrize("shape", [(1, 7, 3), (4, 10, 2), (2, 5, 6, 3), (1, 1, 1, 4), (3, 4, 4, 1)])
def test_global_avgpool(shape):
    seed = seed_of(shape)
    layer = build({"type": "global_avgpool"}, shape[1:], seed)
    x = rand(np.random.default_rng(seed), shape)
    run_pair(layer, x, lambda xt: (xt.mean(dim=tuple(range(1, len(shape) - 1))), {}), seed)


@pytest.mark.parametrize("shape", [(1, 7), (4, 10, 2), (2, 5, 6, 3), (1, 1, 1, 4)])
def test_flatten(shape):
    seed = seed_of(shape)
    layer = build({"type": "flatten"}, shape[1:], seed)
    assert layer.out_shape == (int(np.prod(shape[1:])),)
    x = rand(np.random.default_rng(seed), shape)
    run_pair(layer, x, lambda xt: (xt.reshape(shape[0], -1), {}), seed)


# -------------------------------------------------------------------------------- dropout

@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(1, 7), (4, 10, 3), (64, 5, 5, 4)])
def test_dropout_training(rate, shape):
    seed = seed_of((rate, shape))
    rng = np.random.default_rng(seed)
    layer = build({"type": "dropout", "rate": rate}, shape[1:], seed)
    layer.rng = np.random.default_rng(seed + 1)
    # inputs bounded away from zero so the output's zeros are exactly the dropped units
    x = (rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)).astype(np.float32)
    y = layer.forward(x, True)
    keep = y != 0
    dy = rand(rng, shape)
    dx = layer.backward(dy)
    mask = torch.tensor(keep.astype(np.float32))
    xt = t32(x, grad=True)
    yt = xt * mask / (1.0 - rate)
    yt.backward(t32(dy))
    check(y, yt, "forward", rtol=1e-6, atol=0)
    check(dx, xt.grad, "dx", rtol=1e-6, atol=0)
    assert not np.any(dx[~keep]), "backward drops the same units as forward"
    if x.size >= 1000:  # keep fraction ~ 1 - rate (binomial, > 5 sigma slack)
        sigma = math.sqrt(rate * (1 - rate) / x.size)
        assert abs(keep.mean() - (1 - rate)) < 6 * sigma
    # a second call draws a new mask
    y2 = layer.forward(x, True)
    if x.size >= 10:
        assert not np.array_equal(y2 != 0, keep)


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_dropout_identity(rate):
    layer = build({"type": "dropout", "rate": rate}, (4, 3), 0)
    layer.rng = np.random.default_rng(0)
    rng = np.random.default_rng(1)
    x, dy = rand(rng, (5, 4, 3)), rand(rng, (5, 4, 3))
    for training in ([False, True] if rate == 0 else [False]):
        np.testing.assert_array_equal(layer.forward(x, training), x)
        np.testing.assert_array_equal(layer.backward(dy), dy)


# ------------------------------------------------------------------------------ batchnorm

def bn_torch(xt, gamma, beta, rmean, rvar, training, momentum, eps):
    """Channels-last x -> channels-first for F.batch_norm (BatchNorm1d/2d semantics)."""
    nd = xt.dim()
    perm = (0, nd - 1) + tuple(range(1, nd - 1))
    inv = (0,) + tuple(range(2, nd)) + (1,)
    y = F.batch_norm(xt.permute(*perm), rmean, rvar, gamma, beta, training, momentum, eps)
    return y.permute(*inv)


BN_SHAPES = [(2, 5), (8, 3), (1, 7, 4), (4, 9, 3), (1, 3, 3, 2), (3, 5, 4, 6)]


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("momentum,eps", [(None, None), (0.3, 1e-3)])
def test_batchnorm_training(shape, momentum, eps):
    seed = seed_of((shape, momentum))
    rng = np.random.default_rng(seed)
    cfg = {"type": "batchnorm"}
    if momentum is not None:
        cfg.update(momentum=momentum, epsilon=eps)
    mom, eps_ = (momentum or 0.1), (eps or 1e-5)
    c = shape[-1]
    layer = build(cfg, shape[1:], seed)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, c)
    layer.params["beta"][...] = rand(rng, c)
    layer.buffers["running_mean"][...] = rand(rng, c)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, c)
    rmean = t32(layer.buffers["running_mean"])
    rvar = t32(layer.buffers["running_var"])
    for step in range(3):  # running stats accumulate over several batches
        x = rand(rng, shape, 2.0) + rand(rng, (c,), 3.0)

        def oracle(xt):
            g, b = t32(layer.params["gamma"], grad=True), t32(layer.params["beta"], grad=True)
            return bn_torch(xt, g, b, rmean, rvar, True, mom, eps_), {"gamma": g, "beta": b}
        run_pair(layer, x, oracle, seed + step, training=True)
        check(layer.buffers["running_mean"], rmean, f"running_mean step {step}")
        check(layer.buffers["running_var"], rvar, f"running_var step {step}")


@pytest.mark.parametrize("shape", BN_SHAPES + [(1, 5)])
def test_batchnorm_eval_forward(shape):
    seed = seed_of(shape)
    rng = np.random.default_rng(seed)
    c = shape[-1]
    layer = build({"type": "batchnorm"}, shape[1:], seed)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, c)
    layer.params["beta"][...] = rand(rng, c)
    layer.buffers["running_mean"][...] = rand(rng, c)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, c)
    before = {k: v.copy() for k, v in layer.buffers.items()}
    x = rand(rng, shape, 2.0)
    y = layer.forward(x, False)
    yt = bn_torch(t32(x), t32(layer.params["gamma"]), t32(layer.params["beta"]),
                  t32(before["running_mean"]), t32(before["running_var"]), False, 0.1, 1e-5)
    check(y, yt, "eval forward")
    for k, v in before.items():
        np.testing.assert_array_equal(layer.buffers[k], v, err_msg=f"eval changed {k}")


@pytest.mark.parametrize("shape", [(4, 9, 3)])
def test_batchnorm_eval_backward(shape):
    seed = 7
    rng = np.random.default_rng(seed)
    c = shape[-1]
    layer = build({"type": "batchnorm"}, shape[1:], seed)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, c)
    layer.params["beta"][...] = rand(rng, c)
    layer.buffers["running_mean"][...] = rand(rng, c)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, c)
    rmean, rvar = t32(layer.buffers["running_mean"]), t32(layer.buffers["running_var"])
    x = rand(rng, shape, 2.0)

    def oracle(xt):
        g, b = t32(layer.params["gamma"], grad=True), t32(layer.params["beta"], grad=True)
        return bn_torch(xt, g, b, rmean, rvar, False, 0.1, 1e-5), {"gamma": g, "beta": b}
    run_pair(layer, x, oracle, seed, training=False)


# ----------------------------------------------------------------------------- Sequential

SEQ_SPEC = {
    "input_shape": [12, 3], "num_classes": 5,
    "layers": [
        {"type": "conv1d", "filters": 6, "kernel_size": 3, "padding": "same", "activation": "relu"},
        {"type": "batchnorm"},
        {"type": "maxpool1d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 16, "activation": "relu"},
        {"type": "dense", "units": 5},
    ],
}


class TorchSeq(torch.nn.Module):
    """The same network in torch, channels-first inside, weights copied from edgekd."""

    def __init__(self, model):
        super().__init__()
        conv, bn, _, _, d1, d2 = model.layers
        self.conv = torch.nn.Conv1d(3, 6, 3)
        self.bn = torch.nn.BatchNorm1d(6, momentum=0.1, eps=1e-5)
        self.d1 = torch.nn.Linear(6 * 6, 16)
        self.d2 = torch.nn.Linear(16, 5)
        with torch.no_grad():
            self.conv.weight.copy_(t32(conv.params["kernel"]).permute(2, 1, 0))
            self.conv.bias.copy_(t32(conv.params["bias"]))
            self.bn.weight.copy_(t32(bn.params["gamma"]))
            self.bn.bias.copy_(t32(bn.params["beta"]))
            self.bn.running_mean.copy_(t32(bn.buffers["running_mean"]))
            self.bn.running_var.copy_(t32(bn.buffers["running_var"]))
            for lin, d in ((self.d1, d1), (self.d2, d2)):
                lin.weight.copy_(t32(d.params["kernel"]).T)
                lin.bias.copy_(t32(d.params["bias"]))

    def forward(self, x):                     # x: [N, L, C]
        z = x.permute(0, 2, 1)
        z = F.relu(self.conv(F.pad(z, tf_same_pads(z.shape[2], 3, 1))))
        z = F.max_pool1d(self.bn(z), 2)
        z = z.permute(0, 2, 1).reshape(z.shape[0], -1)   # flatten channels-last, like edgekd
        return self.d2(F.relu(self.d1(z)))

    def grads_edgekd_order(self):
        return [self.conv.weight.grad.permute(2, 1, 0), self.conv.bias.grad,
                self.bn.weight.grad, self.bn.bias.grad,
                self.d1.weight.grad.T, self.d1.bias.grad,
                self.d2.weight.grad.T, self.d2.bias.grad]


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_sequential_vs_torch(batch):
    rng = np.random.default_rng(batch)
    model = Sequential(SEQ_SPEC, seed=batch)
    bn = model.layers[1]
    bn.params["gamma"][...] = rng.uniform(0.5, 2.0, 6)
    bn.params["beta"][...] = rand(rng, 6)
    for layer in model.layers:
        if "bias" in layer.params:
            layer.params["bias"][...] = rand(rng, layer.params["bias"].shape, 0.1)
    tm = TorchSeq(model)
    tm.train()
    for step in range(2):
        x = rand(rng, (batch, 12, 3))
        y = model.forward(x, training=True)
        dy = rand(rng, y.shape)
        dx = model.backward(dy)
        xt = t32(x, grad=True)
        tm.zero_grad()
        yt = tm(xt)
        yt.backward(t32(dy))
        check(y, yt, f"logits step {step}")
        check(dx, xt.grad, f"dx step {step}")
        grads = [g for _, _, g in model.named_params()]
        assert len(grads) == 8
        for i, (g, gt) in enumerate(zip(grads, tm.grads_edgekd_order())):
            check(g, gt, f"grad #{i} step {step}")
        check(bn.buffers["running_mean"], tm.bn.running_mean, "running_mean")
        check(bn.buffers["running_var"], tm.bn.running_var, "running_var")
    tm.eval()
    x = rand(rng, (batch, 12, 3))
    with torch.no_grad():
        check(model.forward(x, training=False), tm(t32(x)), "eval logits")
        check(model.predict(x, batch=2), tm(t32(x)), "predict logits")


SEQ2D_SPEC = {
    "input_shape": [9, 8, 2], "num_classes": 4,
    "layers": [
        {"type": "conv2d", "filters": 5, "kernel_size": [3, 2], "stride": [2, 1],
         "padding": "same", "activation": "relu6"},
        {"type": "maxpool2d", "pool_size": 2, "stride": 1},
        {"type": "dropout", "rate": 0.0},
        {"type": "global_avgpool"},
        {"type": "dense", "units": 4, "activation": "tanh"},
    ],
}


@pytest.mark.parametrize("batch", [1, 4])
def test_sequential_conv2d_vs_torch(batch):
    rng = np.random.default_rng(10 + batch)
    model = Sequential(SEQ2D_SPEC, seed=3)
    conv, _, _, _, dense = model.layers
    conv.params["bias"][...] = rand(rng, 5)
    dense.params["bias"][...] = rand(rng, 4, 0.1)
    k = t32(conv.params["kernel"], grad=True)
    cb = t32(conv.params["bias"], grad=True)
    w = t32(dense.params["kernel"], grad=True)
    db = t32(dense.params["bias"], grad=True)
    x = rand(rng, (batch, 9, 8, 2), 3.0)
    y = model.forward(x, training=True)
    dy = rand(rng, y.shape)
    dx = model.backward(dy)
    xt = t32(x, grad=True)
    z = F.pad(xt.permute(0, 3, 1, 2), tf_same_pads(8, 2, 1) + tf_same_pads(9, 3, 2))
    z = F.relu6(F.conv2d(z, k.permute(3, 2, 0, 1), cb, stride=(2, 1)))
    z = F.max_pool2d(z, 2, 1).mean(dim=(2, 3))
    yt = torch.tanh(z @ w + db)
    yt.backward(t32(dy))
    check(y, yt, "logits")
    check(dx, xt.grad, "dx")
    for g, gt in zip([g for _, _, g in model.named_params()], [k.grad, cb.grad, w.grad, db.grad]):
        check(g, gt, "grad")
