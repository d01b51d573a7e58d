"""Built-in `digits`: 8x8 handwritten digits, small enough to train on a Pi Zero.

The data ships inside the package (digits.csv.gz, 1797 rows of 64 pixels 0..16 and a
label; see DIGITS_LICENSE.txt) and is read through importlib.resources, so it works from
a source tree, a wheel or a zip import with no download and no cache. Pixels are scaled
to [0, 1] and kept flat ([64]) because the default student is an MLP. The split is a
stratified 80/20 with a fixed seed so every machine trains and tests on the same samples.
"""

import numpy as np

from edgekd.data.datasets import Dataset
from edgekd.data.packaged import read_packaged_csv
from edgekd.errors import EdgekdError

NAME = "digits"
TEST_FRACTION = 0.2
SEED = 0
_RESOURCE = "digits.csv.gz"
_PIXELS = 64
_MAX_PIXEL = 16.0


def load_digits():
    """Return the packaged digits as a Dataset: x [N, 64] float32 in [0, 1], 10 classes."""
    table = _read_table()
    x = table[:, :_PIXELS].astype(np.float32) / np.float32(_MAX_PIXEL)
    y = table[:, _PIXELS]
    test = _stratified_test_mask(y, TEST_FRACTION, SEED)
    return Dataset(NAME, x[~test], y[~test], x[test], y[test], num_classes=10)


def _read_table():
    """Parse the packaged csv.gz; a damaged install is a one-line error, not a traceback."""
    where = f"{__package__}/{_RESOURCE}"
    table = read_packaged_csv(_RESOURCE, "digits", np.int64)
    if table.shape[1] != _PIXELS + 1 or table[:, :_PIXELS].min() < 0 \
            or table[:, :_PIXELS].max() > _MAX_PIXEL:
        raise EdgekdError(f"{where}: expected rows of 64 pixels in 0..16 and a label, got "
                          f"shape {table.shape}; reinstall edgekd")
    return table


def _stratified_test_mask(y, fraction, seed):
    """Mark round(fraction * n_c) samples of each class c for test, chosen by a seeded RNG.

    Per-class selection keeps class proportions equal in both splits; the original row
    order is kept within each split, so the result depends only on (data, fraction, seed).
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_test = int(np.floor(fraction * len(idx) + 0.5))
        mask[rng.permutation(idx)[:n_test]] = True
    return mask
