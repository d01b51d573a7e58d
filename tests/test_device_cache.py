"""What the device keeps: rows as they arrived, within the byte budget, and when it keeps them."""

import numpy as np
import pytest

from edgekd.distill.config import TrainConfig
from edgekd.distill.device_cache import LABEL_BYTES, DeviceCache
from edgekd.distill.halting import HaltingConfig
from edgekd.link.local import LocalSource
from edgekd.source import Hello
from edgekd.workflows import train_student

STUDENT = {"input_shape": [64], "num_classes": 10,
           "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                      {"type": "dense", "units": 10}]}


def first_batches(teacher, digits, codec, x_codec, n=3):
    src = LocalSource(teacher, digits, codec, x_codec)
    src.open(Hello(0, 32, 0.1, (64,), 10))
    it = iter(src.epoch(0))
    return src, [next(it) for _ in range(n)]


@pytest.mark.parametrize("codec,x_codec", [("topk", "u8"), ("f16", "f16"), ("f32", "f32")])
def test_kept_rows_decode_to_exactly_what_was_streamed(teacher, digits, codec, x_codec):
    src, batches = first_batches(teacher, digits, codec, x_codec)
    codec_obj = src.row_codec()
    cache = DeviceCache(len(digits.y_train), codec_obj, 10 ** 9)
    for b in batches:
        assert cache.admit(b.ids, b.rows, b.y).tolist() == b.ids.tolist()
    for b in batches:
        x, soft, y, rows = cache.get(b.ids)
        np.testing.assert_array_equal(x, b.x)
        np.testing.assert_array_equal(soft, b.soft)
        np.testing.assert_array_equal(y, b.y)
    assert cache.nbytes == 96 * (codec_obj.nbytes + LABEL_BYTES)
    src.close()


def test_the_budget_is_encoded_bytes_and_admission_stops_when_full(teacher, digits):
    src, batches = first_batches(teacher, digits, "topk", "u8")
    row = 64 + 11 + LABEL_BYTES          # u8 pixels, top-4 of 10 classes, the label
    assert src.row_codec().nbytes + LABEL_BYTES == row
    cache = DeviceCache(len(digits.y_train), src.row_codec(), 40 * row + row - 1)
    kept = [cache.admit(b.ids, b.rows, b.y) for b in batches]
    assert [len(k) for k in kept] == [32, 8, 0]
    assert kept[1].tolist() == batches[1].ids[:8].tolist()      # the first to arrive
    assert cache.kept.sum() == 40 and cache.nbytes == 40 * row
    src.close()


def test_nothing_is_kept_without_a_row_codec():
    cache = DeviceCache(100, None, 10 ** 9)
    assert cache.capacity == 0 and not cache.kept.any() and cache.state() == {}


def run(teacher, digits, tmp_path, **halting):
    budget = halting.pop("budget")
    cfg = TrainConfig(epochs=4, halting=HaltingConfig(**halting), cache_budget=budget)
    return train_student(STUDENT, LocalSource(teacher, digits, "topk", "u8"), cfg, str(tmp_path))


def test_keep_first_keeps_at_first_sight_and_keep_settled_only_what_settles(teacher, digits,
                                                                          tmp_path):
    row = 64 + 11 + LABEL_BYTES
    first = run(teacher, digits, tmp_path / "f", budget=200 * row, keep="first", rho=1.0)
    settled = run(teacher, digits, tmp_path / "s", budget=200 * row, keep="settled", eps=0.0,
                  rho=1.0)
    assert first["kept"] == 200              # full after the first few batches
    assert settled["kept"] == 0              # eps 0: nothing ever settles, so nothing is kept
    assert first["bytes_down"] < settled["bytes_down"]


def test_settle_after_holds_settling_back(teacher, digits, tmp_path):
    lines = []
    cfg = TrainConfig(epochs=4, cache_budget=0,
                      halting=HaltingConfig(eps=0.5, patience=1, settle_after=2, rho=1.0))
    train_student(STUDENT, LocalSource(teacher, digits), cfg, str(tmp_path), on_epoch=lines.append)
    assert [m["newly_settled"] for m in lines[:2]] == [0, 0] and lines[2]["newly_settled"] > 0


def test_no_sample_settles_in_a_training_split_under_min_samples(teacher, digits, tmp_path):
    """digits trains on 1,294 samples: with min_samples above that, per-sample halting is off."""
    common = {"budget": 0, "eps": 0.5, "patience": 1, "rho": 1.0}
    on = run(teacher, digits, tmp_path / "on", min_samples=1294, **common)
    off = run(teacher, digits, tmp_path / "off", min_samples=1295, **common)
    assert on["settled_fraction"] > 0.5 and off["settled_fraction"] == 0
