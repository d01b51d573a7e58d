"""Test-wide settings: one BLAS thread, as the CLI uses (small matrices, no oversubscription)."""

import os

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
