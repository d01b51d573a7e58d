"""The layer option "init": "torch_uniform" draws what PyTorch's layers draw (bounds exact,
moments checked on big layers and against torch's own draw), and the default draw is
unchanged."""

import math

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.nn.model import Sequential

BIG = [  # (spec, weighted layer index, kernel fan-in, torch module of the same layer)
    ({"input_shape": [1024], "num_classes": 2048,
      "layers": [{"type": "dense", "units": 2048, "init": "torch_uniform"}]}, 0, 1024,
     ("Linear", (1024, 2048))),
    ({"input_shape": [64, 48], "num_classes": 5, "layers": [
        {"type": "conv1d", "filters": 2048, "kernel_size": 5, "activation": "relu",
         "init": "torch_uniform"},
        {"type": "global_avgpool"}, {"type": "dense", "units": 5}]}, 0, 5 * 48,
     ("Conv1d", (48, 2048, 5))),
    ({"input_shape": [8, 8, 16], "num_classes": 5, "layers": [
        {"type": "conv2d", "filters": 2048, "kernel_size": 3, "init": "torch_uniform"},
        {"type": "global_avgpool"}, {"type": "dense", "units": 5}]}, 0, 9 * 16,
     ("Conv2d", (16, 2048, 3))),
]


@pytest.mark.parametrize("spec,index,fan_in,torch_layer", BIG, ids=["dense", "conv1d", "conv2d"])
def test_torch_uniform_bounds_and_moments(spec, index, fan_in, torch_layer):
    layer = Sequential(spec, seed=3).layers[index]
    bound = 1 / math.sqrt(fan_in)
    for name in ("kernel", "bias"):
        w = layer.params[name].astype(np.float64)
        assert np.abs(w).max() <= np.float32(bound), name
        assert np.abs(w).max() > 0.99 * bound, name          # fills the interval
        std = bound / math.sqrt(3)                            # of U(-b, b)
        tol = 4 * std / math.sqrt(w.size)                     # 4 standard errors of the mean
        assert abs(w.mean()) < tol, name
        assert abs(w.std() / std - 1) < (0.01 if name == "kernel" else 0.05), name


@pytest.mark.parametrize("spec,index,fan_in,torch_layer", BIG, ids=["dense", "conv1d", "conv2d"])
def test_torch_uniform_matches_torchs_own_draw(spec, index, fan_in, torch_layer):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cls, args = torch_layer
    mod = getattr(torch.nn, cls)(*args)
    layer = Sequential(spec, seed=3).layers[index]
    for name, theirs in (("kernel", mod.weight), ("bias", mod.bias)):
        theirs = theirs.detach().numpy().astype(np.float64)
        ours = layer.params[name].astype(np.float64)
        assert ours.size == theirs.size, name
        assert abs(np.abs(ours).max() - np.abs(theirs).max()) < 0.01 / math.sqrt(fan_in), name
        assert abs(ours.std() / theirs.std() - 1) < (0.02 if name == "kernel" else 0.1), name


def test_default_init_is_unchanged():
    """No "init" key draws exactly what it always drew: He normal for relu, Glorot uniform
    otherwise, zero biases, from the model's weight stream (seeded results stay put)."""
    spec = {"input_shape": [16, 3], "num_classes": 4, "layers": [
        {"type": "conv1d", "filters": 8, "kernel_size": 3, "activation": "relu"},
        {"type": "flatten"}, {"type": "dense", "units": 4}]}
    model = Sequential(spec, seed=7)
    rng = np.random.default_rng(np.random.SeedSequence(7).spawn(2)[0])
    conv = rng.normal(0.0, math.sqrt(2.0 / 9), size=(3, 3, 8)).astype(np.float32)
    limit = math.sqrt(6.0 / (14 * 8 + 4))
    dense = rng.uniform(-limit, limit, size=(14 * 8, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.layers[0].params["kernel"], conv)
    np.testing.assert_array_equal(model.layers[2].params["kernel"], dense)
    assert not model.layers[0].params["bias"].any() and not model.layers[2].params["bias"].any()
    named = {**spec, "layers": [dict(layer, init="he_glorot") if "filters" in layer or
                                "units" in layer else layer for layer in spec["layers"]]}
    assert Sequential(named, seed=7).weights_sha256() == model.weights_sha256()


def test_unknown_init_is_a_one_line_error():
    spec = {"input_shape": [4], "num_classes": 2,
            "layers": [{"type": "dense", "units": 2, "init": "xavier"}]}
    with pytest.raises(EdgekdError, match=r"init must be one of \['he_glorot', 'torch_uniform'\]"):
        Sequential(spec)


def test_spec_level_init_is_every_weighted_layers_default():
    layers = [{"type": "conv1d", "filters": 8, "kernel_size": 3, "activation": "relu"},
              {"type": "flatten"}, {"type": "dense", "units": 4, "init": "he_glorot"}]
    top = Sequential({"input_shape": [16, 3], "num_classes": 4, "init": "torch_uniform",
                      "layers": layers}, seed=5)
    each = Sequential({"input_shape": [16, 3], "num_classes": 4, "layers": [
        dict(layers[0], init="torch_uniform"), layers[1], layers[2]]}, seed=5)
    assert top.weights_sha256() == each.weights_sha256()
    assert np.abs(top.layers[0].params["kernel"]).max() <= np.float32(1 / math.sqrt(9))
    assert not top.layers[2].params["bias"].any()      # the layer's own "init" won
    with pytest.raises(EdgekdError, match=r"init must be one of"):
        Sequential({"input_shape": [4], "num_classes": 2, "init": "lecun",
                    "layers": [{"type": "dense", "units": 2}]})
