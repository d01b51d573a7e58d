"""Kernel backends: `numpy` (the reference, always there) and `numba` (its twin, when numba
is installed). Layers, the loss and the optimizers call kernels through `active()`.

`auto` means numba if it imports, else numpy; a Pi Zero without numba loses nothing but speed.
"""

import types

from ..errors import EdgekdError

NAMES = ("auto", "numpy", "numba")
KERNELS = ("dense_forward", "dense_backward", "conv2d_forward", "conv2d_backward",
           "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
           "kd_loss_grad", "sgd_update", "adam_update")
_active = None


def _numpy():
    from . import conv, dense, kd, optim, pool
    ns = types.SimpleNamespace(name="numpy")
    for mod in (conv, dense, kd, optim, pool):
        for k in KERNELS:
            if hasattr(mod, k):
                setattr(ns, k, getattr(mod, k))
    return ns


def _numba():
    try:
        from . import numba_twins
    except ImportError:
        raise EdgekdError("the numba backend needs numba: pip install 'edgekd[fast]'") from None
    ns = types.SimpleNamespace(name="numba")
    for k in KERNELS:
        setattr(ns, k, getattr(numba_twins, k))
    return ns


def numba_available():
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def select(name="numpy"):
    """Make `name` the active backend and return it."""
    global _active
    if name not in NAMES:
        raise EdgekdError(f"unknown backend {name!r}; choose from {', '.join(NAMES)}")
    if name == "auto":
        name = "numba" if numba_available() else "numpy"
    if _active is None or _active.name != name:
        _active = _numba() if name == "numba" else _numpy()
    return _active


def active():
    return _active if _active is not None else select("numpy")


def numba_cache_warm():
    """Whether numba's on-disk cache already holds our kernels (so start-up will be fast)."""
    import glob
    import os
    here = os.path.join(os.path.dirname(__file__), "__pycache__")
    roots = [here, os.environ.get("NUMBA_CACHE_DIR", "")]
    found = set()
    for root in filter(None, roots):
        for f in glob.glob(os.path.join(root, "**", "numba_twins.*.nbi"), recursive=True):
            found.add(os.path.basename(f).split(".")[1].rsplit("-", 1)[0])  # name-line
    return all(k in found for k in KERNELS)


def warm_up(log=None):
    """Compile (or load from the on-disk cache) every numba kernel once, saying so, so that
    the first training step is not mysteriously slow. Returns seconds spent."""
    import time
    if active().name != "numba":
        return 0.0
    if log:
        log("numba: compiling kernels (cached on disk after the first run)")
    t0 = time.perf_counter()
    from . import warmup
    warmup.run(active())
    return time.perf_counter() - t0


