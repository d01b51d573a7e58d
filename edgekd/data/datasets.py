"""Datasets as four arrays, checked once on the way in.

Every consumer (trainer, teacher, host server, exporter calibration) relies on the same
guarantees, so they are enforced here and nowhere else: x is finite float32, C-contiguous,
channels-last, with the same feature shape in both splits; y is 1-D int64 in
[0, num_classes). A bad file gets one EdgekdError line naming the file and the array,
never a NumPy traceback. Files are .npz read with allow_pickle=False: no pickle, ever.
"""

import os

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.fileio import atomic_path

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class Dataset:
    """Train and test splits plus the facts every consumer needs about them.

    Construction validates and converts, so holding a Dataset means the data is sound.
    `name` is a built-in name or the file path and prefixes every error message.
    `num_classes` defaults to max label + 1 over both splits; a declared value may be
    larger (classes absent from this data) but never smaller.
    """

    def __init__(self, name, x_train, y_train, x_test, y_test, num_classes=None):
        self.name = str(name)
        self.x_train = _as_features(x_train, "x_train", self.name)
        self.x_test = _as_features(x_test, "x_test", self.name)
        _check_same_features(self.x_train, self.x_test, self.name)
        self.y_train = _as_labels(y_train, "y_train", len(self.x_train), self.name)
        self.y_test = _as_labels(y_test, "y_test", len(self.x_test), self.name)
        self.num_classes = _resolve_num_classes(num_classes, self.y_train, self.y_test, self.name)

    @property
    def input_shape(self):
        """Shape of one sample, the student spec's `input_shape`."""
        return tuple(self.x_train.shape[1:])

    def check_model(self, input_shape, num_classes, what):
        """Refuse a model (student, teacher) that cannot read these samples or name their
        classes, before any work: one line naming both shapes."""
        if tuple(input_shape) != self.input_shape:
            _fail(what, f"takes inputs of shape {list(input_shape)}, but the samples of the "
                        f"data set {self.name} have shape {list(self.input_shape)}")
        if self.num_classes > num_classes:
            _fail(what, f"has {num_classes} classes, but the data set {self.name} has labels "
                        f"up to {self.num_classes - 1}")

    def head(self, train=None, test=None):
        """The first `train` / `test` samples of each split (None keeps a split whole), for a
        small slice of a large set; num_classes is kept so models stay compatible."""
        for split, n, have in (("train", train, len(self.y_train)),
                               ("test", test, len(self.y_test))):
            if n is not None and not 1 <= n <= have:
                _fail(self.name, f"{split} samples must be in 1..{have}, got {n}")
        return Dataset(self.name, self.x_train[:train], self.y_train[:train],
                       self.x_test[:test], self.y_test[:test], num_classes=self.num_classes)

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes})")


def _fail(where, message):
    raise EdgekdError(f"{where}: {message}")


def _as_features(x, key, where):
    """Check one x array and return it as finite, C-contiguous float32."""
    x = np.asarray(x)
    if x.dtype.kind not in "iuf":
        _fail(where, f"{key} must be numeric (int or float), got dtype {x.dtype}")
    if x.ndim < 2:
        _fail(where, f"{key} must have shape [N, features...], got rank {x.ndim} shape {x.shape}")
    if len(x) == 0:
        _fail(where, f"{key} is empty: the split needs at least one sample")
    if x[0].size == 0:
        _fail(where, f"{key} has no features (shape {x.shape})")
    if x.dtype.kind == "f":
        _check_finite(x, key, where, "is {}")
    with np.errstate(over="ignore"):
        x = np.ascontiguousarray(x, dtype=np.float32)
    _check_finite(x, key, where, "is {} after conversion to float32 (magnitude above "
                  f"{_FLOAT32_MAX:.3g})")
    return x


def _check_finite(x, key, where, template):
    """Fail on the first NaN/inf, naming its full index so the user can find it."""
    bad = ~np.isfinite(x)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(x[index]) else "inf"
        label = ", ".join(str(i) for i in index)
        _fail(where, f"{key}[{label}] " + template.format(kind))


def _check_same_features(x_train, x_test, where):
    if x_train.shape[1:] != x_test.shape[1:]:
        _fail(where, f"x_train samples have shape {x_train.shape[1:]} but x_test samples "
                     f"have shape {x_test.shape[1:]}; they must match")


def _as_labels(y, key, n, where):
    """Check one y array (integer dtype, 1-D, one label per x row) and return int64."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        _fail(where, f"{key} must have an integer dtype (class indices), got {y.dtype}")
    if y.ndim != 1:
        _fail(where, f"{key} must be 1-D (one class index per sample), got shape {y.shape}")
    x_key = "x" + key[1:]
    if len(y) != n:
        _fail(where, f"{key} has {len(y)} labels but {x_key} has {n} samples")
    if y.min() < 0:
        i = int(np.argmax(y < 0))
        _fail(where, f"{key}[{i}] = {int(y[i])} is negative; labels must be in [0, num_classes)")
    if y.max() > np.iinfo(np.int64).max:
        i = int(np.argmax(y))
        _fail(where, f"{key}[{i}] = {int(y[i])} is too large for a class index")
    return np.ascontiguousarray(y, dtype=np.int64)


def class_counts(y, num_classes):
    """Samples per class. np.bincount casts its input to the platform's index type (intp) and
    refuses a cast that could lose values, so int64 labels fail on a 32-bit board (int32 intp)
    exactly as uint64 ones fail on x86-64; labels are in [0, num_classes), so intp holds them."""
    return np.bincount(np.asarray(y).astype(np.intp), minlength=num_classes)


def _resolve_num_classes(declared, y_train, y_test, where):
    """Infer num_classes from the labels or check the declared value covers them."""
    top = max(int(y_train.max()), int(y_test.max()))
    if declared is None:
        n = top + 1
        if n < 2:
            _fail(where, "labels hold a single class (0); a classifier needs at least 2")
        return n
    n = _as_count(declared, where)
    if n < 2:
        _fail(where, f"num_classes is {n}; a classifier needs at least 2")
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        if y.max() >= n:
            i = int(np.argmax(y >= n))
            _fail(where, f"{key}[{i}] = {int(y[i])} is out of range for num_classes={n}")
    return n


def _as_count(value, where):
    value = np.asarray(value)
    if value.ndim != 0 or value.dtype.kind not in "iu":
        _fail(where, f"num_classes must be an integer scalar, got dtype {value.dtype} "
                     f"shape {value.shape}")
    return int(value)


def load_npz(path):
    """Load and validate a dataset .npz; every failure is one EdgekdError line. Only the
    dataset's own members are read, and their sizes are checked before they are."""
    from edgekd.npzfile import read_npz
    path = os.fspath(path)
    arrays = read_npz(path, REQUIRED_KEYS, optional=["num_classes"],
                      what=f"a dataset .npz with {', '.join(REQUIRED_KEYS)} (optional num_classes)")
    return Dataset(path, arrays["x_train"], arrays["y_train"], arrays["x_test"],
                   arrays["y_test"], num_classes=arrays.get("num_classes"))


def save_dataset(path, ds):
    """Write `ds` as an .npz that load_dataset reads back identically.

    Written to a temp file and renamed, so a crash never leaves a half-written dataset.
    The file handle is passed to numpy so it cannot append a second ".npz" to the name.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test,
                 y_test=ds.y_test, num_classes=np.int64(ds.num_classes))
