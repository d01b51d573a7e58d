"""Datasets: validated .npz files and the built-ins `digits`, `iris`, `sensor` and
`fashion-mnist`.

One entry point, load_dataset(name_or_path), so the CLI, the host server and the
trainer accept the same names and paths and report the same one-line errors.
"""

import os

from edgekd.data.datasets import REQUIRED_KEYS, Dataset, class_counts, load_npz, save_dataset
from edgekd.data.digits import load_digits
from edgekd.data.fashion_mnist import load_fashion_mnist
from edgekd.data.iris import load_iris
from edgekd.data.sensor import load_sensor
from edgekd.errors import EdgekdError

_LOADERS = {"digits": load_digits, "iris": load_iris, "sensor": load_sensor, "fashion-mnist": load_fashion_mnist}
BUILTINS = tuple(_LOADERS)

__all__ = ["BUILTINS", "REQUIRED_KEYS", "Dataset", "class_counts", "load_dataset", "save_dataset"]


def load_dataset(name):
    """Load a built-in by name, else the .npz file at that path; the name wins a tie."""
    if isinstance(name, str) and name in _LOADERS:
        return _LOADERS[name]()
    path = os.fspath(name)
    if not os.path.exists(path):
        raise EdgekdError(f"{path}: unknown dataset: not a built-in "
                          f"({', '.join(BUILTINS)}) and no such file")
    return load_npz(path)
