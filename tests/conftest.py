"""Test-wide settings: one BLAS thread, as the CLI uses (small matrices, no oversubscription)."""

import os

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

try:  # CI explores a fixed set of examples (no flaky landings); local runs keep exploring
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:
    pass
