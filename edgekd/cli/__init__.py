"""`edgekd` command line: flags, progress and output only; the work is in `edgekd.workflows`."""

import os

# Small matrices train fastest on one BLAS thread, and a busy board has no spare core:
# set before numpy loads, unless the user chose otherwise.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from . import (  # noqa: F401
    board_cmd,
    data_cmd,
    demo_cmd,
    design_cmd,
    export_cmd,
    report_cmd,
    serve_cmd,
    tls_cmd,
    train_cmd,
)
from .base import main

__all__ = ["main"]
