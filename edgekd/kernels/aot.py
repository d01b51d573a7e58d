"""Ahead-of-time builds of generated training steps, so that a warm start needs no numba.

numba's on-disk cache still costs every process about a second before its first step:
importing numba with its typing and lowering tables, then the dispatcher finding and loading
the cached machine code. numba.pycc compiles the same @njit functions, for this machine's
CPU, into an ordinary extension module that imports with NumPy alone. edgekd builds one per
generated program, once per machine, in a child process (the parent never imports numba),
next to the program's source in the step cache. Where no build can run (no C compiler or
Python headers, a numba without pycc, EDGEKD_AOT=0) or one failed, numba's JIT cache serves
as before; a failed build is remembered and not retried.

An extension module built this way checks no argument types, so its callers
(edgekd.distill.fused, edgekd.nn.program) pass exactly the types the program's EXPORTS table
names.
"""

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

BUILD_TIMEOUT_S = 1800
announce = None  # the CLI sets a callable that tells the user a build (tens of seconds) starts


def unavailable():
    """Why this machine cannot build ahead of time, or None when it can."""
    if os.environ.get("EDGEKD_AOT", "1") == "0":
        return "EDGEKD_AOT=0"
    spec = importlib.util.find_spec("numba")      # finds numba without importing it
    if spec is None or not spec.origin:
        return "numba is not installed"
    if not os.path.exists(os.path.join(os.path.dirname(spec.origin), "pycc", "__init__.py")):
        return "this numba has no pycc"
    if importlib.util.find_spec("setuptools") is None:
        return "numba.pycc needs setuptools"
    if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        return "no Python headers (Python.h)"
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    if not cc or shutil.which(cc[0]) is None:
        return f"no C compiler ({cc[0] if cc else 'cc'})"
    return None


def _cpu():
    """What the machine code is specialised to: the first processor's model and feature
    flags (x86 'flags', ARM 'Features' and part numbers)."""
    keep = ("model name", "flags", "features", "cpu implementer", "cpu architecture",
            "cpu part", "cpu variant")
    try:
        with open("/proc/cpuinfo") as f:
            block = f.read().split("\n\n")[0]
    except OSError:
        import platform
        return platform.processor()
    return "\n".join(ln for ln in block.splitlines() if ln.split(":")[0].strip().lower() in keep)


def machine_key():
    """Builds are kept per interpreter, numba and llvmlite install, machine, CPU model and
    flags, and emulated CPU: a home directory shared with another machine never loads code
    built for a CPU it does not have."""
    from .backend import _probe_key
    key = "|".join((str(_probe_key()), sysconfig.get_config_var("EXT_SUFFIX") or "", _cpu()))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _import(name, path):
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load(src_path, name):
    """The ahead-of-time module of the program whose source is `src_path`, built first when
    missing; None when this machine cannot build it or its build failed."""
    if unavailable():
        return None
    root = os.path.join(os.path.dirname(src_path), "aot", machine_key())
    out = os.path.join(root, name + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    failed = os.path.join(root, name + ".failed")
    if not os.path.exists(out):
        if os.path.exists(failed):
            return None
        os.makedirs(root, exist_ok=True)
        if announce is not None:
            announce("numba: building this model's compiled program (once per machine and "
                     "model; later runs load it without numba)")
        why = _build(src_path, out)
        if why is not None:
            _remember_failure(failed, why)
            return None
    try:
        return _import(name, out)
    except ImportError:
        return None   # a damaged file: the JIT cache serves (importing costs little to retry)


def _build(src_path, out):
    """Build in a child process; None on success, else the child's last line."""
    try:
        p = subprocess.run([sys.executable, "-m", "edgekd.kernels.aot_build", src_path, out],
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"the build did not finish ({e.__class__.__name__})"
    if p.returncode == 0 and os.path.exists(out):
        return None
    lines = [ln.strip() for ln in p.stderr.splitlines() if ln.strip()]
    return (lines[-1] if lines else f"exit status {p.returncode}")[:300]


def _remember_failure(path, why):
    try:
        with open(path, "w") as f:
            f.write(why + "\n")
    except OSError:
        pass  # a read-only cache only costs a retry per run
