"""Built-in `fashion-mnist`: 70,000 real 28x28 grey images of clothes in 10 classes.

Why this set: it is real data that a small device cannot hold (the training split is 47 MB of
pixels, 188 MB as float32), so it is where early halting must pay. It is not shipped with
edgekd: Debian's `dataset-fashion-mnist` package (MIT licence, Zalando Research) puts the four
IDX files under /usr/share/datasets/fashion-mnist/; EDGEKD_FASHION_MNIST names another
directory holding the same files (gzipped or not).

IDX is a big-endian header (two zero bytes, a type code, the number of dimensions, one u32 per
dimension) followed by the raw array. Every header field is checked against what Fashion-MNIST
must be and against the file's real size before an array is allocated, so a truncated or
hostile file is one line, never a traceback or a huge allocation. Pixels are scaled to [0, 1]
and shaped [N, 28, 28, 1], channels-last like every image in edgekd; the official train / test
split is kept as published. `train_samples` / `test_samples` take the first N of each split
(the published order is already shuffled), for tests and small boards.
"""

import gzip
import os

import numpy as np

from edgekd.data.datasets import Dataset
from edgekd.errors import EdgekdError

NAME = "fashion-mnist"
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_DIR = "EDGEKD_FASHION_MNIST"
APT_PACKAGE = "dataset-fashion-mnist"
CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle boot")
SIDE = 28
_UBYTE = 0x08
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000)}


def load_fashion_mnist(directory=None, train_samples=None, test_samples=None):
    """Return Fashion-MNIST as a Dataset: x [N, 28, 28, 1] float32 in [0, 1], 10 classes."""
    directory = directory or os.environ.get(ENV_DIR) or DEFAULT_DIR
    splits = {}
    for split, limit in (("train", train_samples), ("test", test_samples)):
        images, labels, total = _FILES[split]
        n = total if limit is None else _check_limit(limit, total, split)
        x = read_idx(_find(directory, images), (total, SIDE, SIDE), n)
        y = read_idx(_find(directory, labels), (total,), n)
        if y.max() >= len(CLASSES):
            raise EdgekdError(f"{_find(directory, labels)}: label {int(y.max())} is not a "
                              f"Fashion-MNIST class (0..{len(CLASSES) - 1})")
        splits[split] = (x.reshape(n, SIDE, SIDE, 1).astype(np.float32) / np.float32(255),
                         y.astype(np.int64))
    return Dataset(NAME, *splits["train"], *splits["test"], num_classes=len(CLASSES))


def _check_limit(limit, total, split):
    if not 1 <= int(limit) <= total:
        raise EdgekdError(f"{NAME}: {split} samples must be in 1..{total}, got {limit}")
    return int(limit)


def _find(directory, stem):
    """The IDX file `stem` in `directory`, gzipped or plain; a missing one names the package."""
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise EdgekdError(f"{NAME}: {stem}[.gz] is not in {directory}; install the data set with "
                      f"`apt-get install {APT_PACKAGE}` or set {ENV_DIR} to a directory "
                      f"holding the four IDX files")


def read_idx(path, shape, rows):
    """The first `rows` rows of the u8 IDX array at `path`, which must have `shape` exactly.

    Reads the header, checks it, then reads just the bytes those rows need (gzip streams are
    decompressed no further), so memory is bounded by what was asked for."""
    opener = gzip.open if path.endswith(".gz") else open
    row_bytes = int(np.prod(shape[1:], dtype=np.int64))
    try:
        with opener(path, "rb") as f:
            _check_header(f.read(4 + 4 * len(shape)), shape, path)
            want = rows * row_bytes
            raw = f.read(want)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise EdgekdError(f"{path}: cannot read the IDX file ({' '.join(str(e).split())})") \
            from None
    if len(raw) != want:
        raise EdgekdError(f"{path}: truncated: the header promises {shape[0]} rows of "
                          f"{row_bytes} bytes, but the file ends after {len(raw) // row_bytes}")
    return np.frombuffer(raw, dtype=np.uint8).reshape((rows,) + tuple(shape[1:]))


def _check_header(header, shape, path):
    """Magic (0, 0, type u8, ndim) and big-endian u32 dimensions, against the expected shape."""
    if len(header) < 4 or header[:2] != b"\0\0":
        raise EdgekdError(f"{path}: not an IDX file (it must start with two zero bytes)")
    if header[2] != _UBYTE or header[3] != len(shape):
        raise EdgekdError(f"{path}: expected an IDX array of unsigned bytes with {len(shape)} "
                          f"dimensions, got type code 0x{header[2]:02x} with {header[3]}")
    if len(header) != 4 + 4 * len(shape):
        raise EdgekdError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(header[4:], dtype=">u4"))
    if dims != tuple(shape):
        raise EdgekdError(f"{path}: expected Fashion-MNIST's shape {list(shape)}, "
                          f"the header says {list(dims)}")
