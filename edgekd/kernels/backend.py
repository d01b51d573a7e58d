"""Kernel backends: `numpy` (the reference, always there) and `numba` (its twin, when numba
is installed). Layers, the loss and the optimizers call kernels through `active()`.

`auto` means numba if it can start here, else numpy; a Pi Zero without numba loses nothing but
speed. "Can start" is asked of a child process, because on some CPUs importing numba kills the
process (Debian armel's llvmlite on an ARMv6: `LLVM ERROR: Symbol not found:
__sync_fetch_and_add_4`, an abort no `except` can catch); the verdict is cached on disk per
interpreter, numba/llvmlite version, machine and emulated CPU.
"""

import json
import os
import subprocess
import sys
import types

from ..errors import EdgekdError

NAMES = ("auto", "numpy", "numba")
KERNELS = ("dense_forward", "dense_backward", "conv2d_forward", "conv2d_backward",
           "maxpool2d_forward", "maxpool2d_max", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
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


class _NumbaKernels:
    """The numba twins, imported on first use: a training step built ahead of time
    (kernels/aot.py) needs none of them, and importing numba costs half a second."""

    name = "numba"

    def __getattr__(self, k):
        if k not in KERNELS:
            raise AttributeError(k)
        from . import numba_twins
        for kernel in KERNELS:
            setattr(self, kernel, getattr(numba_twins, kernel))
        return getattr(self, k)


def _numba():
    import importlib.util
    if importlib.util.find_spec("numba") is None:
        raise EdgekdError("the numba backend needs numba: pip install 'edgekd[fast]'")
    return _NumbaKernels()


PROBE = "from numba import njit; assert njit(lambda a: a + 1)(1) == 2"
_verdicts = {}


def _installed_packages():
    """numba's and llvmlite's package files with their modification times, found without
    importing either (None when one is missing). Cheaper than their versions: importing
    importlib.metadata and scanning sys.path for them cost ~50 ms of every warm start, and a
    reinstall or upgrade rewrites the files, so the verdict is asked again."""
    import importlib.util
    found = []
    for name in ("numba", "llvmlite"):
        try:
            spec = importlib.util.find_spec(name)
            origin = spec.origin if spec is not None else None
            found.append(f"{origin}@{os.stat(origin).st_mtime_ns}" if origin else None)
        except (ImportError, ValueError, OSError):
            return None
        if found[-1] is None:
            return None
    return found


def _probe_key():
    """What the verdict depends on: interpreter, numba and llvmlite installs, machine and the
    CPU QEMU emulates (None when numba is not installed)."""
    import platform
    packages = _installed_packages()
    if packages is None:
        return None
    return "|".join((sys.executable, *packages, platform.machine(), os.environ.get("QEMU_CPU", "")))


def _probe_cache_path():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgekd", "numba-probe.json")


def _run_probe():
    """(ok, reason): compile one function with numba in a child process."""
    try:
        p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                           timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"the numba probe did not finish ({e.__class__.__name__})"
    if p.returncode == 0:
        return True, ""
    lines = [ln.strip() for ln in p.stderr.splitlines() if ln.strip()]
    why = next((ln for ln in lines if ln.startswith("LLVM ERROR")), lines[-1] if lines else "")
    why = "".join(c if c.isprintable() else "?" for c in why)[:160]
    return False, why or f"exit status {p.returncode}"


def numba_status():
    """(usable, reason). Not installed -> (False, 'not installed'); installed but unable to start
    on this CPU -> (False, what the child printed); otherwise (True, '')."""
    key = _probe_key()
    if key is None:
        return False, "not installed"
    if key in _verdicts:
        return _verdicts[key]
    path = _probe_cache_path()
    try:
        with open(path) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict):
        cached = {}
    hit = cached.get(key)
    if isinstance(hit, list) and len(hit) == 2:
        verdict = (bool(hit[0]), str(hit[1]))
    else:
        verdict = _run_probe()
        cached[key] = list(verdict)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(cached, f)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home only costs a probe per run
    _verdicts[key] = verdict
    return verdict


def numba_available():
    return numba_status()[0]


def select(name="numpy", log=None):
    """Make `name` the active backend and return it. `auto` takes numba when it can start here
    and otherwise numpy, saying why through `log` when numba is installed but unusable."""
    global _active
    if name not in NAMES:
        raise EdgekdError(f"unknown backend {name!r}; choose from {', '.join(NAMES)}")
    if name in ("auto", "numba") and (_active is None or _active.name != "numba"):
        ok, why = numba_status()
        if name == "numba" and not ok and why != "not installed":
            raise EdgekdError(f"numba is installed but cannot start on this machine ({why}); "
                              "use --backend numpy")
        if name == "auto":
            if not ok and why != "not installed" and log:
                log(f"numba is installed but cannot start on this machine ({why}); "
                    "using the numpy backend")
            name = "numba" if ok else "numpy"
    elif name == "auto":
        name = _active.name
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
    """Compile every numba kernel once when the on-disk cache does not hold them yet, saying
    so, so that the first training step is not mysteriously slow. With a warm cache it does
    nothing: each kernel then loads on first use, and a fused training step
    (kernels/step_numba.py) loads as one piece, so start-up pays only for what runs.
    Returns seconds spent."""
    import time
    if active().name != "numba" or numba_cache_warm():
        return 0.0
    if log:
        log("numba: compiling kernels (cached on disk after the first run)")
    t0 = time.perf_counter()
    from . import warmup
    warmup.run(active())
    return time.perf_counter() - t0


