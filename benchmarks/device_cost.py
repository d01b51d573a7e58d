"""What a training step costs on the device, and the device process's memory net of Python.

    python benchmarks/device_cost.py [--steps 200] [--connect HOST:PORT --student S.json] [--json]

On a Pi Zero (one in-order core, no SIMD) the numpy backend's time goes mostly to Python-level
calls, so this counts them: Python function calls and calls into C (numpy functions, methods,
builtins) per training step (forward, KD loss, backward, Adam) of the digits MLP and of a
conv1d student, numpy backend, batch 32, by `sys.setprofile`; then the wall time per step
without the profiler (best of 3). With --connect it also runs `edgekd train --connect` (the
device process, numpy backend) against that host and reports its peak RSS, the peak RSS of the
same interpreter with only NumPy imported, and the difference: under qemu-user both include the
emulator, so the difference is the figure a real board would see. tests/arm/run runs this on
x86 and in the ARM userlands.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

from models import MODELS as _ALL  # noqa: E402  (benchmarks/models.py, beside this file)

MODELS = {k: _ALL[k] for k in ("mlp", "conv1d")}
BATCH = 32
# VmHWM, as the trainer's peak_rss_mib reads it: ru_maxrss would carry over this (parent)
# process's high-water mark across fork and exec
IDLE = ("import numpy\n"
        "print(next(int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')))")


def make_step(spec):
    import numpy as np

    from edgekd.distill.optim import make_optimizer
    from edgekd.distill.steps import kd_step
    from edgekd.kernels import backend
    from edgekd.nn.model import Sequential
    backend.select("numpy")
    m = Sequential(spec, seed=0)
    opt = make_optimizer("adam", m.trainables(), 1e-3)
    rng = np.random.default_rng(0)
    c = spec["num_classes"]
    x = rng.standard_normal((BATCH, *spec["input_shape"])).astype(np.float32)
    t = (rng.standard_normal((BATCH, c)) * 3).astype(np.float32)
    y = rng.integers(0, c, BATCH)
    return lambda: kd_step(m, opt, x, t, y, 4.0, 0.9)


def count_calls(step):
    """(python calls, C calls) in one step, after a warm-up step."""
    step()
    counts = {"call": 0, "c_call": 0}

    def prof(frame, event, arg):
        if event in counts:
            counts[event] += 1
    sys.setprofile(prof)
    try:
        step()
    finally:
        sys.setprofile(None)
    return counts["call"] - 1, counts["c_call"]  # minus the step lambda itself


def ms_per_step(step, steps):
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - t0) / steps)
    return best * 1e3


def memory(connect, student, epochs):
    idle = float(subprocess.run([sys.executable, "-c", IDLE], capture_output=True, text=True,
                                check=True, timeout=600).stdout)
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        p = subprocess.run([sys.executable, "-m", "edgekd", "train", "--student", student,
                            "--connect", connect, "--epochs", str(epochs), "--backend", "numpy",
                            "--json", "--out", os.path.join(out, "run")],
                           capture_output=True, text=True, timeout=3600, check=False)
    if p.returncode != 0:
        sys.exit(f"device_cost: edgekd train --connect failed: {p.stderr.strip()}")
    run = json.loads(p.stdout)
    return {"idle_mib": round(idle, 1), "device_mib": run["peak_rss_mib"],
            "net_mib": round(run["peak_rss_mib"] - idle, 1), "epochs": epochs,
            "test_accuracy": run["test_accuracy"]}


def start_up():
    """Seconds to import the device path (edgekd's CLI, link client and trainer) in a fresh
    interpreter, and for the interpreter with NumPy alone."""
    code = ("import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)")
    out = {}
    for name, mods in (("numpy", "numpy"),
                       ("device_path", "numpy, edgekd.cli, edgekd.link.client, edgekd.distill.trainer")):
        out[name] = min(float(subprocess.run([sys.executable, "-c", code.format(mods)], check=True,
                                             capture_output=True, text=True, timeout=600).stdout)
                        for _ in range(2))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--connect", help="HOST:PORT of an `edgekd serve` on digits (memory row).")
    ap.add_argument("--student", help="Student spec for the memory row (digits-shaped).")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    import numpy as np
    res = {"machine": platform.machine(), "qemu_cpu": os.environ.get("QEMU_CPU", ""),
           "python": platform.python_version(), "numpy": np.__version__, "batch": BATCH,
           "steps": {}, "start_up_s": start_up()}
    for name, spec in MODELS.items():
        step = make_step(spec)
        py, c = count_calls(step)
        res["steps"][name] = {"python_calls": py, "c_calls": c, "calls_per_step": py + c,
                              "ms_per_step": round(ms_per_step(step, a.steps), 4)}
    if a.connect:
        if not a.student:
            ap.error("--connect needs --student")
        res["memory"] = memory(a.connect, a.student, a.epochs)
    if a.json:
        print(json.dumps(res))
        return
    print(f"{res['machine']} {res['qemu_cpu']} python {res['python']} numpy {res['numpy']}, "
          f"batch {BATCH}, numpy backend")
    for name, r in res["steps"].items():
        print(f"  {name:7} {r['python_calls']:5} Python + {r['c_calls']:5} C calls per step, "
              f"{r['ms_per_step']:.3f} ms per step")
    s = res["start_up_s"]
    print(f"  import: numpy {s['numpy']:.2f} s, the device path {s['device_path']:.2f} s")
    if "memory" in res:
        m = res["memory"]
        print(f"  device process peak RSS {m['device_mib']} MiB - idle interpreter "
              f"{m['idle_mib']} MiB = {m['net_mib']} MiB")


if __name__ == "__main__":
    main()
