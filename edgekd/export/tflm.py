"""Run .tflite bytes in the real TFLM interpreter (tflite-micro's Python runtime), and find
the smallest tensor arena it accepts.

The arena search bisects over sizes, creating an interpreter for each in a forked child:
TFLM's Python wrapper crashes the process (SIGSEGV) instead of raising when the arena
cannot even hold its allocator, so each probe must be able to die alone.
"""

import faulthandler
import os
import struct

import numpy as np

from ..errors import EdgekdError
from . import deps
from .tflite_read import require_tflite

RUN_ARENA_MIN = 16 << 20   # address space only: untouched pages cost nothing
ARENA_LIMIT = 256 << 20


def interpreter(model_bytes, arena=None):
    """A TFLM interpreter for `model_bytes`, or a one-line error if TFLM refuses it."""
    rt = deps.runtime()
    arena = arena or max(RUN_ARENA_MIN, 16 * len(model_bytes))
    try:
        return rt.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena)
    except (RuntimeError, ValueError, struct.error) as e:
        raise EdgekdError(f"the TFLM interpreter refused the model: {e}") from None


def run_tflm(model_bytes, x):
    """Outputs of the model for a batch `x` [N, *input shape], one invoke per sample. x must
    have the model's input dtype (int8 models take quantized input)."""
    return _invoke_rows(interpreter(model_bytes), x)


def _invoke_rows(it, x):
    d = it.get_input_details(0)
    shape, dtype = tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"])
    x = np.asarray(x)
    same_type = x.dtype.kind == "f" if dtype.kind == "f" else x.dtype == dtype
    if not same_type or x.ndim != len(shape) or x.shape[1:] != shape[1:]:
        raise EdgekdError(f"the model takes {dtype.name} input of shape [N, "
                          f"{', '.join(map(str, shape[1:]))}], got {x.dtype.name} "
                          f"{list(x.shape)}")
    out = []
    for row in x.astype(dtype, copy=False):
        it.set_input(np.ascontiguousarray(row[None]), 0)
        it.invoke()
        out.append(it.get_output(0)[0])
    if not out:
        o = it.get_output_details(0)
        return np.zeros((0, *(int(s) for s in o["shape"][1:])), o["dtype"])
    return np.stack(out)


class Runner:
    """A .tflite model in TFLM that takes float inputs: int8 models get them quantized as their
    input tensor says (as TFLM's QUANTIZE would), float ones as they are."""

    def __init__(self, model_bytes, where="model"):
        require_tflite(model_bytes, where)
        try:
            self.it = it = interpreter(model_bytes)
        except EdgekdError as e:
            raise EdgekdError(f"{where}: not a model TFLM runs ({e})") from None
        d, o = it.get_input_details(0), it.get_output_details(0)
        self.model_bytes = bytes(model_bytes)
        self.input_shape = tuple(int(s) for s in d["shape"][1:])
        out_shape = tuple(int(s) for s in o["shape"][1:])
        if len(out_shape) != 1:
            raise EdgekdError(f"{where}: the model outputs shape {list(out_shape)}; a "
                              f"classifier outputs [classes]")
        self.num_classes = out_shape[0]
        self.dtype = np.dtype(d["dtype"])
        self.int8 = self.dtype == np.int8
        self.quant = tensor_quant(d) if self.int8 else None
        if self.int8 and self.quant is None:
            raise EdgekdError(f"{where}: the int8 input has no per-tensor quantization")

    def __call__(self, x):
        from .qmath import quantize
        x = np.asarray(x, np.float32)
        return _invoke_rows(self.it, quantize(x, *self.quant) if self.int8 else x)


def tensor_quant(details):
    """(scale, zero_point) of an interpreter tensor quantized per tensor, else None."""
    q = details.get("quantization_parameters") or {}
    scales, zps = q.get("scales", []), q.get("zero_points", [])
    return (float(scales[0]), int(zps[0])) if len(scales) == 1 and len(zps) == 1 else None


def _accepts(model_bytes, size):
    """Does TFLM build an interpreter with a `size`-byte arena and run it once? Asked in a
    forked child, with TFLM's complaints on stderr silenced."""
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            faulthandler.disable()   # a crash here is an answer, not a bug to report
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.dup2(devnull, 1)
            rt = deps.runtime()
            it = rt.Interpreter.from_bytes(bytes(model_bytes), arena_size=size)
            d = it.get_input_details(0)
            it.set_input(np.zeros(tuple(d["shape"]), d["dtype"]), 0)
            it.invoke()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def smallest_arena(model_bytes, limit=ARENA_LIMIT):
    """The smallest tensor arena (bytes, at most `limit`) with which TFLM accepts and runs
    the model, or None if `limit` is too small: doubling from 1 KiB, then bisecting."""
    hi = min(1024, limit)
    while not _accepts(model_bytes, hi):
        if hi >= limit:
            return None
        hi = min(2 * hi, limit)
    lo = 0   # largest size known to fail (0 trivially does)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _accepts(model_bytes, mid):
            hi = mid
        else:
            lo = mid
    return hi


def arena_size(model_bytes):
    """The smallest tensor arena (bytes) with which TFLM accepts and runs the model."""
    deps.runtime()   # fail here, with the install hint, rather than in a child
    size = smallest_arena(model_bytes)
    if size is None:
        interpreter(model_bytes, ARENA_LIMIT)   # raises TFLM's own reason, if it has one
        raise EdgekdError(f"TFLM does not run the model with a {ARENA_LIMIT}-byte arena")
    return size
