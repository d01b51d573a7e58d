"""Measure this machine's training speed in FLOP/s, for the designer's `speed` constraint.

Convention: a training step (forward in training mode + backward) is counted as
3 x the inference FLOPs of `cost.model_cost` for each sample of the batch (forward, input
gradient and weight gradient are each about one forward). The loss and the optimizer
update are neither timed nor counted; NumPy/Python call overhead is timed, so the figure
is what layers this small really achieve, not the BLAS peak.

Single-threaded numbers are what the designer's profiles assume. When threadpoolctl is
installed, BLAS is limited to one thread while measuring; otherwise it is not, and the
result has `blas_threads_limited: False` (set OPENBLAS_NUM_THREADS=1 / OMP_NUM_THREADS=1
before starting Python for a single-core figure).
"""

import time
from contextlib import nullcontext

import numpy as np

from ..nn.model import Sequential
from .cost import model_cost

BATCH = 32
DENSE_SPEC = {"input_shape": [64], "num_classes": 64,
              "layers": [{"type": "dense", "units": 64, "activation": "relu"}]}
CONV_SPEC = {"input_shape": [64, 8], "num_classes": 16,
             "layers": [{"type": "conv1d", "filters": 16, "kernel_size": 5, "padding": "same",
                         "activation": "relu"},
                        {"type": "global_avgpool"}]}


def _single_thread():
    """Limit BLAS to one thread if threadpoolctl can; the CLI already sets it before numpy
    loads (OPENBLAS_NUM_THREADS=1 and friends), which counts as limited too."""
    import os
    preset = os.environ.get("OPENBLAS_NUM_THREADS") == "1" and os.environ.get("OMP_NUM_THREADS") == "1"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext(), preset
    return threadpool_limits(limits=1), True


def _time_steps(spec, seconds, rng):
    """Training-step FLOP/s of `spec` at batch 32, timed for about `seconds`."""
    model = Sequential(spec, seed=0)
    x = rng.standard_normal((BATCH, *spec["input_shape"])).astype(np.float32)
    g = rng.standard_normal((BATCH, spec["num_classes"])).astype(np.float32)
    step_flops = 3 * model_cost(spec, batch=BATCH).flops * BATCH
    for _ in range(2):  # warm-up: allocator, BLAS initialisation, numba cache
        model.forward(x, training=True)
        model.backward(g, input_grad=False)
    steps, start = 0, time.perf_counter()
    while True:
        model.forward(x, training=True)
        model.backward(g, input_grad=False)
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps * step_flops / elapsed


def measure_flops(seconds=1.0):
    """{'dense_flops_per_s', 'conv_flops_per_s', 'blas_threads_limited'}: training FLOP/s of
    a dense layer (batch 32, 64 -> 64) and of a conv1d layer (batch 32, length 64, 8 input
    channels, 16 filters, kernel 5), each timed for about `seconds`."""
    rng = np.random.default_rng(0)
    limit, limited = _single_thread()
    with limit:
        dense = _time_steps(DENSE_SPEC, seconds, rng)
        conv = _time_steps(CONV_SPEC, seconds, rng)
    return {"dense_flops_per_s": dense, "conv_flops_per_s": conv,
            "blas_threads_limited": limited}
