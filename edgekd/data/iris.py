"""Built-in `iris`: Fisher's 150 flowers, four measurements, three species.

The 150-sample tabular set: the size where a device holds everything and halting has the
least room to pay (the halting benchmark's small end). Ships inside the package
(iris.csv.gz; see IRIS_LICENSE.txt); measurements stay in centimetres, and the split is the
same stratified 80/20 with a fixed seed as digits'.
"""

import numpy as np

from edgekd.data.datasets import Dataset
from edgekd.data.digits import SEED, TEST_FRACTION, _stratified_test_mask
from edgekd.data.packaged import read_packaged_csv
from edgekd.errors import EdgekdError

NAME = "iris"
_RESOURCE = "iris.csv.gz"
_FEATURES = 4


def load_iris():
    """Return the packaged iris as a Dataset: x [150 split 120/30, 4] float32 (cm), 3 classes."""
    where = f"{__package__}/{_RESOURCE}"
    table = read_packaged_csv(_RESOURCE, "iris", np.float64)
    y = table[:, _FEATURES] if table.shape[1] == _FEATURES + 1 else None
    if y is None or len(table) != 150 or not np.isin(y, (0, 1, 2)).all():
        raise EdgekdError(f"{where}: expected 150 rows of 4 measurements and a class 0..2, "
                          f"got shape {table.shape}; reinstall edgekd")
    x, y = table[:, :_FEATURES].astype(np.float32), y.astype(np.int64)
    test = _stratified_test_mask(y, TEST_FRACTION, SEED)
    return Dataset(NAME, x[~test], y[~test], x[test], y[test], num_classes=3)
