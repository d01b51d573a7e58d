"""Precomputed teacher logits: a `.npy` float array `[n_train, classes]`, row i for sample i of
the data set's training split (the teacher ran elsewhere, once).

The host asks a teacher for the logits of inputs, so `logits(x)` finds each row of `x` among
the training inputs by its bytes (a dict built at load time) and returns that sample's logits;
`logits_for(ids, "train")` looks them up by id directly. Rows outside the training split (test
samples, anything else) have no logits here. Identical training rows share the logits of the
first of them: a deterministic teacher gives them the same logits anyway.
"""

import os

import numpy as np

from ..errors import EdgekdError
from ..npzfile import read_npy

NOT_COVERED = "precomputed logits cover the training split only"


def _check_finite(a, path, after):
    bad = ~np.isfinite(a)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(a[i, j]) else "inf"
        raise EdgekdError(f"{path}: logits[{i}, {j}] is {kind}{after}")


class PrecomputedTeacher:
    def __init__(self, path, data):
        self.path = path = os.fspath(path)
        self.spec = None
        if data is None:
            raise EdgekdError(f"{path}: precomputed logits need the data set they were computed "
                              f"on (its training split)")
        if not os.path.isfile(path):
            raise EdgekdError(f"{path}: no such .npy file")
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":
            raise EdgekdError(f"{path}: not a valid .npy file (no NumPy header)")
        arr = read_npy(path)   # header checked against the file and the limit first
        if arr.dtype.kind != "f":
            raise EdgekdError(f"{path}: logits must be a float array, got dtype {arr.dtype}")
        n = len(data.x_train)
        if arr.ndim != 2 or arr.shape[0] != n:
            raise EdgekdError(f"{path}: logits have shape {list(arr.shape)}, but the data set "
                              f"{data.name} needs [{n}, classes] (one row per training sample)")
        if arr.shape[1] < 2:
            raise EdgekdError(f"{path}: logits have {arr.shape[1]} class; a teacher needs at "
                              f"least 2")
        _check_finite(arr, path, "")
        with np.errstate(over="ignore"):
            logits = np.ascontiguousarray(arr, np.float32)
        _check_finite(logits, path, " after conversion to float32")
        self.table = logits
        self.num_classes = int(logits.shape[1])
        self.input_shape = tuple(data.input_shape)
        self.data_name = data.name
        self.index = {}
        x = np.ascontiguousarray(data.x_train, np.float32)
        for i in range(n):
            self.index.setdefault(x[i].tobytes(), i)

    def logits_for(self, ids, split="train"):
        """Logits of samples `ids` of `split` (only "train" is covered)."""
        if split != "train":
            raise EdgekdError(f"{self.path}: {NOT_COVERED}, not the {split!r} split")
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.table)):
            raise EdgekdError(f"{self.path}: sample id out of range 0..{len(self.table) - 1}")
        return self.table[ids]

    def logits(self, x):
        x = np.ascontiguousarray(x, np.float32)
        if x.shape[1:] != self.input_shape:
            raise EdgekdError(f"{self.path}: the teacher takes samples of shape "
                              f"{list(self.input_shape)}, got {list(x.shape[1:])}")
        ids = np.empty(len(x), np.int64)
        for r in range(len(x)):
            i = self.index.get(x[r].tobytes())
            if i is None:
                raise EdgekdError(f"{self.path}: {NOT_COVERED}: row {r} of the inputs is not "
                                  f"in the training split of {self.data_name}")
            ids[r] = i
        return self.table[ids]
