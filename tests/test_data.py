"""edgekd.data: built-ins are sound and stable; bad files fail with one clear line."""

import gzip
import io
from importlib.resources import files

import numpy as np
import pytest

from edgekd.data import BUILTINS, Dataset, load_dataset, save_dataset
from edgekd.errors import EdgekdError


def _arrays(n_train=8, n_test=4, shape=(5,), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.standard_normal((n_train, *shape)).astype(np.float32),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.standard_normal((n_test, *shape)).astype(np.float32),
        "y_test": np.arange(n_test) % classes,
    }


def _write(tmp_path, name="ds.npz", **arrays):
    path = tmp_path / name
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _error(path_or_name, *needles):
    """Load, expect an EdgekdError of one line that contains every needle."""
    with pytest.raises(EdgekdError) as info:
        load_dataset(path_or_name)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def _assert_sound(ds):
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
        assert np.isfinite(x).all()
    for y in (ds.y_train, ds.y_test):
        assert y.dtype == np.int64 and y.ndim == 1
        assert y.min() >= 0 and y.max() < ds.num_classes
    assert ds.input_shape == ds.x_train.shape[1:] == ds.x_test.shape[1:]


# --- built-ins ---------------------------------------------------------------------

def test_builtins_listed():
    assert BUILTINS == ("digits", "iris", "sensor", "fashion-mnist")


def test_digits_shapes_and_range():
    ds = load_dataset("digits")
    _assert_sound(ds)
    assert ds.name == "digits"
    assert ds.input_shape == (64,) and ds.num_classes == 10
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert abs(len(ds.x_test) - 360) <= 2
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    pixels = np.concatenate([ds.x_train, ds.x_test]) * 16
    np.testing.assert_array_equal(pixels, np.round(pixels))  # exact multiples of 1/16


def test_digits_split_is_stratified():
    ds = load_dataset("digits")
    train = np.bincount(ds.y_train, minlength=10)
    test = np.bincount(ds.y_test, minlength=10)
    assert (test > 0).all()
    total = train + test
    assert np.all(np.abs(test - 0.2 * total) <= 0.5 + 1e-9)  # rounding only


def test_digits_split_is_deterministic_and_a_partition():
    a, b = load_dataset("digits"), load_dataset("digits")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    packed = files("edgekd.data").joinpath("digits.csv.gz").read_bytes()
    raw = np.loadtxt(io.BytesIO(gzip.decompress(packed)), delimiter=",", dtype=np.int64)
    split = np.concatenate([
        np.column_stack([a.x_train * 16, a.y_train]),
        np.column_stack([a.x_test * 16, a.y_test]),
    ]).astype(np.int64)
    # every row lands in exactly one split, unchanged
    np.testing.assert_array_equal(_sorted_rows(split), _sorted_rows(raw))


def _sorted_rows(a):
    return a[np.lexsort(a.T[::-1])]


def test_iris_is_fishers_150_split_80_20_by_class():
    d = load_dataset("iris")
    assert (d.input_shape, d.num_classes) == ((4,), 3)
    assert len(d.y_train) == 120 and list(np.bincount(d.y_test)) == [10, 10, 10]
    x = np.concatenate([d.x_train, d.x_test])
    # Fisher's table: its first row, and per-feature ranges in centimetres
    assert np.isclose(x, np.float32([5.1, 3.5, 1.4, 0.2])).all(axis=1).any()
    np.testing.assert_allclose(x.min(0), [4.3, 2.0, 1.0, 0.1], atol=1e-6)
    np.testing.assert_allclose(x.max(0), [7.9, 4.4, 6.9, 2.5], atol=1e-6)


def test_sensor_shapes_and_balance():
    ds = load_dataset("sensor")
    _assert_sound(ds)
    assert ds.name == "sensor"
    assert ds.input_shape == (64, 3) and ds.num_classes == 5
    assert len(ds.x_train) == 2000 and len(ds.x_test) == 500
    np.testing.assert_array_equal(np.bincount(ds.y_train), [400] * 5)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [100] * 5)
    assert np.abs(ds.x_train).max() < 8  # accelerometer-like range, in g
    assert 0.8 < ds.x_train[..., 2].mean() < 1.1  # gravity mostly on z


def test_sensor_is_deterministic():
    a, b = load_dataset("sensor"), load_dataset("sensor")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.x_train[:500], a.x_test)  # splits are independent draws


def test_sensor_classes_differ():
    ds = load_dataset("sensor")
    energy = ds.x_train.std(axis=1).sum(axis=1)  # per-sample motion energy
    means = [energy[ds.y_train == c].mean() for c in range(5)]
    assert means[0] < min(means[1:])  # idle is the quietest
    assert means[2] > means[1]  # running moves more than walking


# --- npz round trip ----------------------------------------------------------------

def test_round_trip(tmp_path):
    ds = load_dataset("digits")
    path = tmp_path / "sub" / "digits.npz"
    with pytest.raises(EdgekdError, match="no such directory"):   # folders are not made
        save_dataset(path, ds)
    path.parent.mkdir()
    save_dataset(path, ds)
    back = load_dataset(str(path))
    assert back.name == str(path)
    assert back.num_classes == ds.num_classes and back.input_shape == ds.input_shape
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ds, key))
    assert [p.name for p in path.parent.iterdir()] == ["digits.npz"]  # no temp left


def test_round_trip_keeps_declared_num_classes_and_odd_suffix(tmp_path):
    ds = Dataset("mem", **_arrays(), num_classes=7)
    path = tmp_path / "data.bin"
    save_dataset(path, ds)
    assert path.exists() and not (tmp_path / "data.bin.npz").exists()
    back = load_dataset(path)
    assert back.num_classes == 7


def test_npz_converts_dtypes(tmp_path):
    arrays = _arrays(shape=(4, 2))
    arrays["x_train"] = (arrays["x_train"] * 10).astype(np.int16)
    arrays["x_test"] = arrays["x_test"].astype(np.float64)
    arrays["y_train"] = arrays["y_train"].astype(np.uint8)
    ds = load_dataset(_write(tmp_path, **arrays))
    _assert_sound(ds)
    assert ds.input_shape == (4, 2) and ds.num_classes == 3


# --- bad input: one line naming the problem ------------------------------------------

def test_unknown_name():
    msg = _error("no-such-dataset", "no-such-dataset", "digits", "sensor")
    assert "built-in" in msg


def test_truncated_npz(tmp_path):
    path = _write(tmp_path, **_arrays(n_train=200))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _error(path, str(path), "truncated")


def test_corrupt_member(tmp_path):
    path = _write(tmp_path, **_arrays(n_train=200))
    data = bytearray(path.read_bytes())
    data[200:260] = b"\xff" * 60  # inside the first member's data; zip directory intact
    path.write_bytes(bytes(data))
    _error(path, str(path))


def test_not_a_zip(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("x_train,y_train\n1,2\n")
    _error(path, str(path), "not an .npz")


def test_bare_npy_is_rejected(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((3, 2)))
    _error(path, "not an .npz")


def test_missing_key(tmp_path):
    arrays = _arrays()
    del arrays["y_test"]
    _error(_write(tmp_path, **arrays), "y_test", "x_train, y_train, x_test, y_test")


def test_nan_in_x_train(tmp_path):
    arrays = _arrays()
    arrays["x_train"][3, 2] = np.nan
    _error(_write(tmp_path, **arrays), "x_train[3, 2]", "NaN")


def test_inf_in_x_test(tmp_path):
    arrays = _arrays()
    arrays["x_test"][1, 0] = -np.inf
    _error(_write(tmp_path, **arrays), "x_test[1, 0]", "inf")


def test_float32_overflow(tmp_path):
    arrays = _arrays()
    arrays["x_train"] = arrays["x_train"].astype(np.float64)
    arrays["x_train"][2, 1] = 1e300
    _error(_write(tmp_path, **arrays), "x_train[2, 1]", "float32")


def test_label_out_of_declared_range(tmp_path):
    arrays = _arrays()
    arrays["y_test"][2] = 5
    _error(_write(tmp_path, num_classes=np.int64(3), **arrays), "y_test[2] = 5", "num_classes=3")


def test_negative_label(tmp_path):
    arrays = _arrays()
    arrays["y_train"][4] = -1
    _error(_write(tmp_path, **arrays), "y_train[4] = -1", "negative")


def test_float_labels(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.float32)
    _error(_write(tmp_path, **arrays), "y_train", "integer dtype", "float32")


def test_mismatched_lengths(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"][:-1]
    _error(_write(tmp_path, **arrays), "y_train has 7 labels", "x_train has 8 samples")


def test_labels_not_1d(tmp_path):
    arrays = _arrays()
    arrays["y_test"] = arrays["y_test"][:, None]
    _error(_write(tmp_path, **arrays), "y_test", "1-D")


def test_feature_shape_mismatch(tmp_path):
    arrays = _arrays()
    arrays["x_test"] = np.zeros((4, 6), np.float32)
    _error(_write(tmp_path, **arrays), "x_train", "x_test", "(5,)", "(6,)")


def test_x_rank_too_low(tmp_path):
    arrays = _arrays()
    arrays["x_train"] = np.zeros(8, np.float32)
    _error(_write(tmp_path, **arrays), "x_train", "rank 1")


def test_x_not_numeric(tmp_path):
    arrays = _arrays()
    arrays["x_train"] = np.full((8, 5), "a")
    _error(_write(tmp_path, **arrays), "x_train", "numeric")


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_split(tmp_path, split):
    arrays = _arrays()
    arrays[f"x_{split}"] = arrays[f"x_{split}"][:0]
    arrays[f"y_{split}"] = arrays[f"y_{split}"][:0]
    _error(_write(tmp_path, **arrays), f"x_{split}", "empty")


def test_single_class(tmp_path):
    arrays = _arrays(classes=1)
    _error(_write(tmp_path, **arrays), "at least 2")


def test_bad_num_classes(tmp_path):
    _error(_write(tmp_path, num_classes=np.float64(3), **_arrays()), "num_classes", "integer")
    _error(_write(tmp_path, num_classes=np.int64(1), **_arrays(classes=1)), "at least 2")


def test_object_array_needs_pickle(tmp_path):
    arrays = _arrays()
    arrays["x_train"] = np.array([[1, None]] * 8, dtype=object)
    _error(_write(tmp_path, **arrays), "x_train", "pickle")


def test_directory_is_not_a_dataset(tmp_path):
    _error(tmp_path, str(tmp_path), "directory")


# 32-bit boards: np.bincount casts to intp (int32 on ARMv6) with the 'safe' rule, so int64 labels
# failed there ("Cannot cast array data from dtype('int64') to dtype('int32')"). uint64 does the
# same to x86-64's int64 intp, so these run the 32-bit failure here.
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.uint32, np.int64, np.uint64])
def test_class_counts_take_any_integer_labels(dtype):
    from edgekd.data import class_counts
    y = np.array([0, 2, 2, 3, 0, 2], dtype)
    assert class_counts(y, 5).tolist() == [2, 0, 3, 1, 0]


def test_bincount_only_through_class_counts():
    """NumPy 2 on x86-64 accepts every integer dtype in np.bincount, so the 32-bit failure cannot
    be run here; this keeps every call behind class_counts' cast to intp instead."""
    import ast
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "edgekd"
    calls = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)] + [tree]:
            for node in ast.walk(fn):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "bincount"):
                    calls.append((path.name, getattr(fn, "name", "<module>")))
    inner = {c for c in calls if c[1] != "<module>"}
    assert inner == {("datasets.py", "class_counts")}, sorted(inner)


def test_data_command_counts_wide_labels(tmp_path):
    """`edgekd data` on an .npz whose labels are uint64 (on a 32-bit board: any int64 labels)."""
    import json
    import subprocess
    import sys
    p = tmp_path / "wide.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x_train=rng.random((7, 3), np.float32), y_train=np.array([0, 1, 1, 2, 2, 2, 0], np.uint64),
             x_test=rng.random((2, 3), np.float32), y_test=np.array([1, 2], np.uint64))
    out = subprocess.run([sys.executable, "-m", "edgekd", "data", str(p), "--json"], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    assert json.loads(out)["train_class_counts"] == [2, 2, 3]
