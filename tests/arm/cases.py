"""Every layer type, forward and backward, plus a few KD + Adam steps, from fixed seeds: the x86
side stores the results, the ARM side recomputes them and compares (tests/arm/run)."""

import numpy as np

# (name, input shape, layer under test); each case is that layer, a flatten if needed, a dense head
LAYERS = [
    ("dense_relu", [12], {"type": "dense", "units": 9, "activation": "relu"}),
    ("dense_tanh", [12], {"type": "dense", "units": 9, "activation": "tanh"}),
    ("dense_relu6", [12], {"type": "dense", "units": 9, "activation": "relu6"}),
    ("conv1d_valid", [20, 3], {"type": "conv1d", "filters": 4, "kernel_size": 5, "stride": 2,
                               "activation": "relu"}),
    ("conv1d_same", [19, 2], {"type": "conv1d", "filters": 3, "kernel_size": 4, "padding": "same"}),
    ("conv2d_valid", [9, 8, 2], {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 2,
                                 "activation": "relu"}),
    ("conv2d_same", [7, 6, 3], {"type": "conv2d", "filters": 2, "kernel_size": [2, 3],
                                "padding": "same", "activation": "tanh"}),
    ("maxpool1d", [16, 3], {"type": "maxpool1d", "pool_size": 3, "stride": 2}),
    ("avgpool1d", [16, 3], {"type": "avgpool1d", "pool_size": 2}),
    ("maxpool2d", [8, 8, 2], {"type": "maxpool2d", "pool_size": 2}),
    ("global_avgpool", [10, 4], {"type": "global_avgpool"}),
    ("dropout", [12], {"type": "dropout", "rate": 0.3}),
    ("batchnorm", [12], {"type": "batchnorm"}),
]
MLP = {"input_shape": [64], "num_classes": 10,
       "layers": [{"type": "dense", "units": 32, "activation": "relu"}, {"type": "dense", "units": 10}]}
CLASSES, BATCH = 5, 6
# The trainer run both sides make (digits, numpy backend): per-sample halting on, epoch halting
# by settled fraction off and patience long, so that it lasts TRAIN_EPOCHS epochs and a run
# killed after a few of them has epochs left to resume
TRAIN_EPOCHS = 8
TRAIN_FLAGS = ["--epochs", TRAIN_EPOCHS, "--backend", "numpy", "--rho", 1.0, "--patience-epochs", 40,
               "--json"]
# float32 round-off differs across instruction sets and BLAS builds (FMA, summation order)
RTOL, ATOL = 1e-4, 1e-5


def spec_of(shape, layer):
    layers = [layer] + ([{"type": "flatten"}] if len(shape) > 1 and layer["type"] != "global_avgpool"
                        else []) + [{"type": "dense", "units": CLASSES}]
    return {"input_shape": shape, "num_classes": CLASSES, "layers": layers}


def layer_case(shape, layer, seed=0):
    """{logits, dx, grads} of one forward (training) and backward pass."""
    from edgekd.nn.model import Sequential
    m = Sequential(spec_of(shape, layer), seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((BATCH, *shape)).astype(np.float32)
    g = rng.standard_normal((BATCH, CLASSES)).astype(np.float32)
    logits = m.forward(x, training=True).copy()
    dx = m.backward(g, input_grad=True).copy()
    return {"logits": logits, "dx": dx, "grads": m.flat_grads.copy()}


def kd_steps(steps=5, seed=0):
    """The MLP's weights after a few KD + Adam steps."""
    from edgekd.distill.optim import make_optimizer
    from edgekd.distill.steps import kd_step
    from edgekd.nn.model import Sequential
    m = Sequential(MLP, seed=seed)
    opt = make_optimizer("adam", m.trainables(), 1e-2)
    rng = np.random.default_rng(seed + 2)
    for _ in range(steps):
        x = rng.random((16, 64), dtype=np.float32)
        t = (rng.standard_normal((16, 10)) * 3).astype(np.float32)
        y = rng.integers(0, 10, 16)
        kd_step(m, opt, x, t, y, 4.0, 0.9)
    return {"params": m.flat_params.copy()}


def all_cases():
    out = {}
    for name, shape, layer in LAYERS:
        for k, v in layer_case(shape, layer).items():
            out[f"{name}.{k}"] = v
    out.update({f"kd_adam.{k}": v for k, v in kd_steps().items()})
    return out


def compare(ref, got):
    """Names whose arrays differ beyond RTOL/ATOL (with the worst absolute error)."""
    bad = []
    for k, want in ref.items():
        have = got[k]
        if have.shape != want.shape or not np.allclose(have, want, rtol=RTOL, atol=ATOL):
            err = float(np.max(np.abs(have - want))) if have.shape == want.shape else float("inf")
            bad.append(f"{k} (max abs error {err:.3g})")
    return bad
