"""Designer feedback: for board profiles, `design` predicts the exported model's bytes and
its TFLM arena (edgekd/design/tflm_cost.py); both must be within 20% of what export writes
and the interpreter accepts, on students the designer itself proposes."""

import numpy as np
import pytest

from edgekd.design.designer import Constraints, design, template_spec
from edgekd.design.profiles import get_profile
from edgekd.design.tflm_cost import lowered_ops, tflm_cost
from edgekd.export import build_tflite
from edgekd.nn.model import Sequential

pytest.importorskip("tflite_micro")

BOARDS = [("mlp", [64], 10, "nrf52840"), ("conv1d", [64, 3], 5, "esp32-s3"),
          ("conv2d", [16, 16, 1], 4, "stm32f746")]


def measured(spec, int8):
    x = np.random.default_rng(0).normal(size=(16, *spec["input_shape"])).astype(np.float32)
    return build_tflite(Sequential(spec, seed=0), int8=int8, calib_x=x)[1]


def assert_close(pred, meas):
    assert abs(pred / meas - 1) <= 0.20, f"predicted {pred}, measured {meas}"


@pytest.mark.parametrize("family, shape, classes, board", BOARDS)
@pytest.mark.parametrize("fmt", ["int8", "float32"])
def test_predictions_match_export_on_board_designs(family, shape, classes, board, fmt):
    profile = get_profile(board)
    d = design(template_spec(family, shape, classes),
               Constraints.from_profile(profile, ram_for="infer", storage_format=fmt))
    info = measured(d.spec, fmt == "int8")
    assert_close(d.tflite_bytes, info["model_bytes"])
    assert_close(d.arena_bytes, info["arena_bytes"])
    assert info["arena_bytes"] <= profile.ram_bytes and info["model_bytes"] <= profile.flash_bytes


@pytest.mark.parametrize("family, shape, classes, ram", [("conv1d", [128, 3], 6, 4096),
                                                         ("conv2d", [28, 28, 1], 10, 8192)])
def test_a_tight_ram_budget_binds_on_the_predicted_arena(family, shape, classes, ram):
    d = design(template_spec(family, shape, classes),
               Constraints(ram_bytes=ram, ram_for="infer", storage_format="int8"))
    assert d.binding == "ram" and d.arena_bytes <= ram
    info = measured(d.spec, True)
    assert_close(d.arena_bytes, info["arena_bytes"])
    assert d.arena_bytes == tflm_cost(d.spec, int8=True).arena_bytes


def test_lowered_ops_mirror_the_exporter():
    spec = template_spec("conv1d", [64, 3], 5)
    _, info = build_tflite(Sequential(spec, seed=0))
    assert [op.kind for op in lowered_ops(spec)] == info["ops"]
