"""Test-wide settings: one BLAS thread, as the CLI uses (small matrices, no oversubscription);
JIT-compiled training steps."""

import os

import pytest

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
# Training steps come from numba's JIT cache in tests: an ahead-of-time build (kernels/aot.py)
# costs ~20 s per program, and tests build hundreds. tests/test_aot.py builds them on purpose.
os.environ.setdefault("EDGEKD_AOT", "0")

try:  # CI explores a fixed set of examples (no flaky landings); local runs keep exploring
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:
    pass


@pytest.fixture(scope="session")
def digits():
    from edgekd.data import load_dataset
    return load_dataset("digits")


@pytest.fixture(scope="session")
def teacher(digits, tmp_path_factory):
    """A small digits teacher (64 hidden units), trained once for the whole session."""
    from edgekd.workflows import train_teacher
    from edgekd.teachers import load_teacher
    path = tmp_path_factory.mktemp("teacher") / "teacher.npz"
    spec = {"input_shape": [64], "num_classes": 10,
            "layers": [{"type": "dense", "units": 64, "activation": "relu"},
                       {"type": "dense", "units": 10}]}
    res = train_teacher(spec, digits, path, epochs=8, batch=32, lr=3e-3)
    assert res["test_accuracy"] > 0.9
    return load_teacher(path)
