"""float32 .tflite export: the real TFLM interpreter agrees with edgekd's own inference."""

from dataclasses import replace

import numpy as np
import pytest

from edgekd.errors import EdgekdError
from edgekd.export import build_tflite, export_tflite, tflm
from edgekd.export.tflm import arena_size, run_tflm
from edgekd.nn.model import Sequential

pytest.importorskip("tflite_micro")

TOL = 1e-4


def conv1d(filters, k=3, **kw):
    return {"type": "conv1d", "filters": filters, "kernel_size": k, **kw}


def dense(units, act="none"):
    return {"type": "dense", "units": units, "activation": act}


SPECS = {
    "dense": {"input_shape": [20], "num_classes": 4, "layers": [
        dense(16, "relu"), {"type": "dropout", "rate": 0.3}, dense(12, "relu6"),
        dense(8, "tanh"), dense(4)]},
    "conv1d": {"input_shape": [32, 3], "num_classes": 5, "layers": [
        conv1d(8, 5, padding="same", activation="relu"),
        conv1d(6, 3, stride=2, activation="tanh"), {"type": "flatten"}, dense(5)]},
    "conv2d": {"input_shape": [9, 7, 2], "num_classes": 3, "layers": [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "stride": 2,
         "activation": "relu6"},
        {"type": "conv2d", "filters": 5, "kernel_size": [2, 3], "activation": "relu"},
        {"type": "flatten"}, dense(3)]},
    "pooling": {"input_shape": [12, 10, 2], "num_classes": 3, "layers": [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "maxpool2d", "pool_size": [2, 3], "stride": 1},
        {"type": "global_avgpool"}, dense(3)]},
    "mixed": {"input_shape": [40, 2], "num_classes": 4, "layers": [
        conv1d(6, 5, padding="same"), {"type": "batchnorm"}, {"type": "maxpool1d", "pool_size": 2},
        conv1d(8, 3, activation="relu"), {"type": "avgpool1d", "pool_size": 3, "stride": 2},
        conv1d(4, 3), {"type": "dropout", "rate": 0.2}, {"type": "batchnorm"},
        {"type": "global_avgpool"}, dense(6), {"type": "batchnorm"}, dense(4)]},
}


def trained_like(spec, seed=0):
    """A model with random weights and batchnorm statistics far from the identity, so that
    folding is really exercised."""
    m = Sequential(spec, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for layer in m.layers:
        if layer.type == "batchnorm":
            c = layer.params["gamma"].shape
            layer.params["gamma"][...] = rng.uniform(0.5, 2.0, c)
            layer.params["beta"][...] = rng.normal(0, 0.5, c)
            layer.buffers["running_mean"][...] = rng.normal(0, 1.0, c)
            layer.buffers["running_var"][...] = rng.uniform(0.2, 3.0, c)
        elif "bias" in layer.params:
            layer.params["bias"][...] = rng.normal(0, 0.1, layer.params["bias"].shape)
    return m


def inputs(spec, n=24, seed=1):
    return np.random.default_rng(seed).normal(size=(n, *spec["input_shape"])).astype(np.float32)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_tflm_agrees_with_predict(name):
    spec = SPECS[name]
    m = trained_like(spec)
    x = inputs(spec)
    data, info = build_tflite(m)
    want = m.predict(x)
    got = run_tflm(data, x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < TOL
    assert not info["int8"] and info["input"]["dtype"] == "float32"
    assert info["input"]["shape"] == [1, *spec["input_shape"]]
    assert info["output"]["shape"] == [1, spec["num_classes"]]
    assert info["model_bytes"] == len(data) and info["arena_bytes"] > 0


def test_lowering_fuses_relu_folds_batchnorm_and_drops_dropout():
    _, info = build_tflite(trained_like(SPECS["mixed"]))
    # conv1d runs as a height-1 CONV_2D behind one RESHAPE; batchnorm and dropout vanish
    assert info["ops"] == ["RESHAPE", "CONV_2D", "MAX_POOL_2D", "CONV_2D", "AVERAGE_POOL_2D",
                           "CONV_2D", "MEAN", "FULLY_CONNECTED", "FULLY_CONNECTED"]
    _, info = build_tflite(trained_like(SPECS["dense"]))
    assert info["ops"] == ["FULLY_CONNECTED"] * 3 + ["TANH", "FULLY_CONNECTED"]


def test_softmax_output_is_the_softmax_of_the_logits():
    m = trained_like(SPECS["conv1d"])
    x = inputs(SPECS["conv1d"])
    data, info = build_tflite(m, softmax=True)
    logits = m.predict(x).astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert info["ops"][-1] == "SOFTMAX"
    assert np.abs(run_tflm(data, x) - p).max() < TOL


def test_export_writes_the_file_and_the_arena_is_the_smallest_accepted(tmp_path):
    m = trained_like(SPECS["pooling"])
    path = tmp_path / "m.tflite"
    info = export_tflite(m, path)
    data = path.read_bytes()
    assert data[4:8] == b"TFL3" and len(data) == info["model_bytes"]
    assert info["arena_bytes"] == arena_size(data)
    assert tflm._accepts(data, info["arena_bytes"])
    assert not tflm._accepts(data, info["arena_bytes"] - 1)


def test_batchnorm_that_cannot_fold_is_a_one_line_error(tmp_path):
    spec = {"input_shape": [8], "num_classes": 2,
            "layers": [dense(4, "relu"), {"type": "batchnorm"}, dense(2)]}
    with pytest.raises(EdgekdError) as e:
        export_tflite(Sequential(spec), tmp_path / "m.tflite")
    msg = str(e.value)
    assert "\n" not in msg and "layer 1 (batchnorm)" in msg and "activation relu" in msg
    spec = {"input_shape": [8, 2], "num_classes": 2,
            "layers": [{"type": "maxpool1d"}, {"type": "batchnorm"}, {"type": "flatten"}, dense(2)]}
    with pytest.raises(EdgekdError, match="follows layer 0 .maxpool1d."):
        export_tflite(Sequential(spec), tmp_path / "m.tflite")
    assert not list(tmp_path.iterdir())


def test_unsupported_layer_and_nan_weights_are_refused(tmp_path):
    m = trained_like(SPECS["dense"])
    # as a future layer type with no TFLite lowering
    m.layers[1].plan = replace(m.layers[1].plan, type="lstm", ops=None)
    with pytest.raises(EdgekdError) as e:
        export_tflite(m, tmp_path / "m.tflite")
    msg = str(e.value)
    assert "layer 1 (lstm)" in msg and "supported layers: dense, conv1d" in msg
    m = trained_like(SPECS["dense"])
    m.layers[2].params["kernel"][0, 0] = np.nan
    with pytest.raises(EdgekdError, match="layer 2 .dense.: kernel holds NaN"):
        export_tflite(m, tmp_path / "m.tflite")
    assert not list(tmp_path.iterdir())


def test_run_tflm_checks_the_input():
    data, _ = build_tflite(trained_like(SPECS["dense"]))
    with pytest.raises(EdgekdError, match=r"float32 input of shape \[N, 20\]"):
        run_tflm(data, np.zeros((2, 21), np.float32))
