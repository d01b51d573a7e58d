"""Fashion-MNIST from IDX files: the real set when Debian's package is installed, and every way
a damaged or hostile IDX file can be wrong, on files written here."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgekd.data import load_dataset
from edgekd.data import fashion_mnist as fm
from edgekd.errors import EdgekdError

REAL = os.path.isfile(os.path.join(fm.DEFAULT_DIR, "train-labels-idx1-ubyte.gz"))
needs_real = pytest.mark.skipif(not REAL, reason=f"apt-get install {fm.APT_PACKAGE} "
                                                 f"(IDX files not in {fm.DEFAULT_DIR})")


def _idx(array, type_code=0x08, dims=None):
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, type_code, len(dims)]) + np.asarray(dims, ">u4").tobytes()
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def _write_set(directory, gz):
    """The four IDX files with the real shapes; pixels a cheap pattern, labels i % 10."""
    for split, (images, labels, n) in fm._FILES.items():
        pixels = (np.arange(n * 28 * 28) % 251).astype(np.uint8).reshape(n, 28, 28)
        for stem, data in ((images, pixels), (labels, (np.arange(n) % 10).astype(np.uint8))):
            name = os.path.join(directory, stem + (".gz" if gz else ""))
            with (gzip.open(name, "wb", compresslevel=1) if gz else open(name, "wb")) as f:
                f.write(_idx(data))


@pytest.fixture(scope="module")
def plain_set(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion-plain")
    _write_set(directory, gz=False)
    return directory


@pytest.fixture(scope="module")
def gzip_set(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fashion-gzip")
    _write_set(directory, gz=True)
    return directory


@pytest.fixture
def broken_set(plain_set, tmp_path):
    """A copy of the plain good set (symlinks) whose `stem` file is replaced by `payload`."""
    def make(stem, payload, gz=False):
        for name in os.listdir(plain_set):
            if not name.startswith(stem):
                os.symlink(plain_set / name, tmp_path / name)
        with open(tmp_path / (stem + (".gz" if gz else "")), "wb") as f:
            f.write(payload)
        return tmp_path
    return make


def _fails(directory, *needles, **limits):
    with pytest.raises(EdgekdError) as info:
        fm.load_fashion_mnist(str(directory), **limits)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


@needs_real
def test_real_set_shapes_range_and_balance():
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60_000, 28, 28, 1) and ds.x_test.shape == (10_000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.num_classes == 10
    assert 0.0 == ds.x_train.min() and ds.x_train.max() == 1.0
    assert np.bincount(ds.y_train).tolist() == [6000] * 10   # the published split
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


@needs_real
def test_real_slice_is_the_head_of_the_full_set():
    full = load_dataset("fashion-mnist")
    part = fm.load_fashion_mnist(train_samples=500, test_samples=100)
    np.testing.assert_array_equal(part.x_train, full.x_train[:500])
    np.testing.assert_array_equal(part.y_test, full.y_test[:100])


@needs_real
def test_data_command_writes_a_slice_that_loads(tmp_path):
    out = tmp_path / "f.npz"
    res = subprocess.run([sys.executable, "-m", "edgekd", "data", "fashion-mnist",
                          "--train-samples", "300", "--test-samples", "50", "-o", str(out),
                          "--json"], capture_output=True, text=True, timeout=300, check=True)
    info = json.loads(res.stdout)
    assert (info["train"], info["test"], info["input_shape"]) == (300, 50, [28, 28, 1])
    back = load_dataset(str(out))
    assert back.x_train.shape == (300, 28, 28, 1) and back.num_classes == 10


@pytest.mark.parametrize("kind", ["plain_set", "gzip_set"])
def test_reads_gzipped_and_plain_files(request, kind):
    ds = fm.load_fashion_mnist(str(request.getfixturevalue(kind)), train_samples=40, test_samples=10)
    assert ds.x_train.shape == (40, 28, 28, 1) and ds.y_train.tolist() == [i % 10 for i in range(40)]
    assert ds.x_train[0, 0, 1, 0] == np.float32(1 / 255) and ds.x_test.max() <= 250 / 255


def test_a_smaller_set_is_refused_by_its_header(tmp_path):
    for split, (images, labels, n) in fm._FILES.items():
        (tmp_path / images).write_bytes(_idx(np.zeros((30, 28, 28), np.uint8)))
        (tmp_path / labels).write_bytes(_idx(np.zeros(30, np.uint8)))
    _fails(tmp_path, "expected Fashion-MNIST's shape [60000, 28, 28]", "[30, 28, 28]")


def test_missing_files_name_the_package(tmp_path):
    _fails(tmp_path, "apt-get install dataset-fashion-mnist", fm.ENV_DIR, str(tmp_path))


def test_env_var_points_elsewhere(tmp_path):
    env = dict(os.environ, **{fm.ENV_DIR: str(tmp_path)})
    res = subprocess.run([sys.executable, "-m", "edgekd", "data", "fashion-mnist"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "dataset-fashion-mnist" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("payload, needle", [
    (b"", "not an IDX file"),
    (b"\x01\x00\x08\x01", "not an IDX file"),
    (bytes([0, 0, 0x0D, 1]) + np.asarray([60_000], ">u4").tobytes(), "type code 0x0d"),
    (bytes([0, 0, 0x08, 2]) + np.asarray([60_000, 1], ">u4").tobytes(), "with 2"),
    (bytes([0, 0, 0x08, 1, 0, 0]), "truncated IDX header"),
    (bytes([0, 0, 0x08, 1]) + np.asarray([0xFFFFFFFF], ">u4").tobytes(), "[4294967295]"),
    (_idx(np.zeros(100, np.uint8), dims=(60_000,)), "truncated: the header promises 60000 rows"),
    (b"\x1f\x8b\x08garbage", "cannot read the IDX file"),
])
def test_hostile_label_file(broken_set, payload, needle):
    gz = payload.startswith(b"\x1f\x8b")   # a broken gzip stream
    _fails(broken_set("train-labels-idx1-ubyte", payload, gz=gz), needle)


def test_label_out_of_range(broken_set):
    labels = (np.arange(60_000) % 10).astype(np.uint8)
    labels[7] = 10
    _fails(broken_set("train-labels-idx1-ubyte", _idx(labels)), "label 10 is not a Fashion-MNIST class")


def test_slice_bounds(plain_set):
    _fails(plain_set, "train samples must be in 1..60000", train_samples=60_001)
    _fails(plain_set, "test samples must be in 1..10000", test_samples=0)
