"""Host side of tests/arm/run, on x86: store the x86 references, run the on-device tests in the
ARM userland, then the cross-ISA runs (`edgekd serve` here, `edgekd train --connect` there,
host-data and device-data, directly and through the fault-injecting proxy), then the
per-step and memory benchmark on both sides. Exits non-zero on the first failed check."""

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

STUDENT = {"input_shape": [64], "num_classes": 10,
           "layers": [{"type": "dense", "units": 20, "activation": "relu"},
                      {"type": "dense", "units": 10}]}
TEACHER = {"input_shape": [64], "num_classes": 10,
           "layers": [{"type": "dense", "units": 64, "activation": "relu"},
                      {"type": "dense", "units": 10}]}
IN_ROOT = "/var/tmp/edgekd-arm"        # the work directory as the userland sees it
DEVICE_PY = "/opt/edgekd-venv/bin/python"
EPOCHS = 6   # enough for the proxy to cut both modes' connections and for the ARM runs to agree


@contextlib.contextmanager
def phase(name, results):
    """Print and record what `name` took: wall, and CPU (user + sys) of this process and of the
    processes it waited for, the emulated ones included."""
    t0, c0 = time.time(), os.times()
    try:
        yield
    finally:
        c1 = os.times()
        cpu = sum(getattr(c1, k) - getattr(c0, k) for k in ("user", "system", "children_user", "children_system"))
        wall = time.time() - t0
        results.setdefault("phases", {})[name] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
        print(f"   [{name}: {wall:.0f} s wall, {cpu:.0f} s CPU]", flush=True)


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)
    print(f"  ok  {what}", flush=True)


class Userland:
    def __init__(self, root, qemu_cpu, target):
        self.root, self.qemu_cpu, self.target = Path(root), qemu_cpu, target
        self.work = self.root / IN_ROOT.lstrip("/")

    def env(self, **extra):
        return {"HOME": "/root", "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8",
                "QEMU_CPU": self.qemu_cpu, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                **extra}

    def cmd(self, *args):
        return [shutil.which("chroot") or "/usr/sbin/chroot", str(self.root), *map(str, args)]

    def run(self, *args, timeout=1800, check_rc=True, **env):
        p = subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout,
                           env=self.env(**env), check=False)
        if check_rc and p.returncode != 0:
            raise Failed(f"{self.target}: {' '.join(map(str, args))} failed:\n{p.stdout}{p.stderr}")
        return p


def host_edgekd(*args, timeout=900):
    p = subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, check=False,
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    if p.returncode != 0:
        raise Failed(f"x86: edgekd {' '.join(map(str, args))} failed: {p.stderr}")
    return p


def last_json(p):
    return json.loads(p.stdout.strip().splitlines()[-1])


def sha(a):
    import numpy as np
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def store_references(ref):
    """What the ARM side compares against, computed here on x86."""
    import numpy as np

    import cases
    from edgekd.data import load_dataset
    ref.mkdir(parents=True)
    np.savez(ref / "cases.npz", **cases.all_cases())
    (ref / "student.json").write_text(json.dumps(STUDENT))
    (ref / "teacher.json").write_text(json.dumps(TEACHER))
    host_edgekd("teacher", "--spec", ref / "teacher.json", "--data", "digits", "--epochs", 6,
                "-o", ref / "teacher.npz", "--json")
    data = {}
    for name in ("digits", "sensor"):
        ds = load_dataset(name)
        data[name] = {"train_class_counts": np.bincount(ds.y_train.astype(np.intp),
                                                        minlength=ds.num_classes).tolist(),
                      **{k: sha(getattr(ds, k)) for k in ("x_train", "y_train", "x_test", "y_test")}}
    run = ["train", "--student", ref / "student.json", "--teacher", ref / "teacher.npz", "--data", "digits"]
    in_process = last_json(host_edgekd(*run, *cases.TRAIN_FLAGS, "--out", ref / "x86-run"))
    one_epoch = last_json(host_edgekd(*run, "--epochs", 1, "--backend", "numpy", "--json",
                                      "--out", ref / "x86-one-epoch"))
    (ref / "meta.json").write_text(json.dumps({"data": data, "in_process": in_process,
                                               "one_epoch": one_epoch}))


class Serve:
    """`edgekd serve` on x86; its session log goes to a file (a pipe nobody reads while the
    runs go on would fill up and stall the sessions that write to it)."""

    def __init__(self, teacher, log):
        self.log = Path(log)
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgekd", "serve", "--teacher", str(teacher), "--data", "digits",
                 "--bind", "127.0.0.1:0", "--json"], stdout=subprocess.PIPE, stderr=err,
                text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        info = json.loads(self.proc.stdout.readline())
        self.address = (info["host"], info["port"])

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failed(f"edgekd serve did not stop within 60 s of SIGINT; its log ends:\n"
                         f"{self.log.read_text()[-2000:]}")
        finally:
            self.proc.stdout.close()
        return self.proc.returncode, self.log.read_text()


def cross_isa(u, ref_host, results):
    """serve (x86) <-> train --connect (ARM): host-data and device-data, direct and through the
    fault proxy; ARM runs must agree bit for bit, and with the x86 device within 0.5 point."""
    from edgekd.link.faultproxy import FaultProxy
    serve = Serve(ref_host / "teacher.npz", ref_host.parent / "serve-cross-isa.log")
    # a run carries ~65 kB down over its training connection (zlib BATCH frames, halting), so a
    # cut every 6-20 kB cuts each run several times whatever the draw
    proxy = FaultProxy(serve.address, cut_bytes=(6_000, 20_000), flip_prob=0.02, seed=12)
    out = {}
    try:
        for mode, extra in (("host-data", []), ("device-data", ["--data", "digits"])):
            common = ["train", "--student", f"{IN_ROOT}/ref/student.json", "--epochs", EPOCHS,
                      "--backend", "numpy", "--json", "--retries", 40, "--timeout", 20, *extra]
            via = f"{proxy.address[0]}:{proxy.address[1]}"
            direct = f"{serve.address[0]}:{serve.address[1]}"
            x86 = last_json(host_edgekd(*[a.replace(f"{IN_ROOT}/ref", str(ref_host)) if isinstance(a, str) else a
                                          for a in common], "--connect", via,
                                        "--out", ref_host.parent / f"x86-{mode}"))
            cuts0 = proxy.cuts
            arm_a = last_json(u.run(DEVICE_PY, "-m", "edgekd", *common, "--connect", via,
                                    "--out", f"{IN_ROOT}/{mode}-proxy"))
            cuts = proxy.cuts - cuts0
            arm_b = last_json(u.run(DEVICE_PY, "-m", "edgekd", *common, "--connect", direct,
                                    "--out", f"{IN_ROOT}/{mode}-direct"))
            print(f"  {mode}: x86 device {x86['test_accuracy']:.4f}, ARM device "
                  f"{arm_a['test_accuracy']:.4f} (through the proxy, {cuts} cuts) / "
                  f"{arm_b['test_accuracy']:.4f} (direct); ARM peak RSS {arm_a['peak_rss_mib']} MiB")
            check(cuts >= 1, f"{mode}: the proxy cut the ARM device's connection ({cuts} times)")
            check(arm_a["weights_sha256"] == arm_b["weights_sha256"],
                  f"{mode}: ARM through the fault proxy == ARM direct (weights_sha256)")
            check(abs(arm_a["test_accuracy"] - x86["test_accuracy"]) <= 0.005,
                  f"{mode}: ARM accuracy within 0.5 point of the x86 device's")
            out[mode] = {"x86": x86, "arm_proxy": arm_a, "arm_direct": arm_b, "cuts": cuts}
    finally:
        proxy.close()
        code, log = serve.stop()
    check(code == 0 and "Traceback" not in log, "serve survived every ARM session and stopped cleanly")
    results["cross_isa"] = out
    return serve.address


def benchmark(u, ref_host, results):
    """benchmarks/device_cost.py on x86 and in the userland against one x86 `edgekd serve`."""
    serve = Serve(ref_host / "teacher.npz", ref_host.parent / "serve-benchmark.log")
    try:
        connect = f"{serve.address[0]}:{serve.address[1]}"
        bench = "benchmarks/device_cost.py"
        x86 = last_json(subprocess.run(
            [sys.executable, str(REPO / bench), "--connect", connect, "--json",
             "--student", str(ref_host / "student.json"), "--epochs", "4"], capture_output=True, text=True,
            check=True, timeout=1800, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}))
        arm = last_json(u.run(DEVICE_PY, f"/opt/edgekd-src/{bench}", "--connect", connect, "--json",
                              "--student", f"{IN_ROOT}/ref/student.json", "--steps", 30,
                              "--epochs", 4))
        results["benchmark"] = {"x86": x86, u.target: arm}
    finally:
        serve.stop()
    print(f"  {'':10}{'idle MiB':>10}{'device MiB':>12}{'net MiB':>9}")
    for who, r in (("x86", x86), (u.target, arm)):
        m = r["memory"]
        print(f"  {who:10}{m['idle_mib']:>10.1f}{m['device_mib']:>12.1f}{m['net_mib']:>9.1f}")
    print(f"  {'model':8}{'calls/step':>11}{'x86 ms/step':>13}{u.target + ' ms/step':>16}{'ratio':>7}")
    for name, row in arm["steps"].items():
        xr = x86["steps"][name]
        print(f"  {name:8}{row['calls_per_step']:>11}{xr['ms_per_step']:>13.3f}"
              f"{row['ms_per_step']:>16.3f}{row['ms_per_step'] / xr['ms_per_step']:>7.1f}")
    check(arm["memory"]["net_mib"] < 64, f"{u.target}: device peak RSS net of QEMU under 64 MiB")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--qemu-cpu", required=True)
    ap.add_argument("--report", required=True, help="Where to write the figures (JSON).")
    a = ap.parse_args(argv)
    u = Userland(a.root, a.qemu_cpu, a.target)
    shutil.rmtree(u.work, ignore_errors=True)
    # the numba verdict is cached per machine: drop it so that every run asks the CPU again
    (u.root / "root/.cache/edgekd/numba-probe.json").unlink(missing_ok=True)
    ref = u.work / "ref"
    results = {"target": a.target, "qemu_cpu": a.qemu_cpu}
    t0 = time.time()
    try:
        print("-- x86 references", flush=True)
        with phase("x86 references", results):
            store_references(ref)
        print(f"-- on-device tests ({a.target})", flush=True)
        with phase("on-device tests", results):
            p = u.run(DEVICE_PY, "-m", "pytest", "-c", "/opt/edgekd-src/tests/arm/pytest.ini",
                      "-rs", "--durations=0", "/opt/edgekd-src/tests/arm/test_on_device.py",
                      check_rc=False, EDGEKD_ARM_REF=f"{IN_ROOT}/ref", EDGEKD_ARM_TARGET=a.target)
        print(p.stdout + p.stderr, flush=True)
        check(p.returncode == 0, f"{a.target}: on-device tests pass")
        print("-- cross-ISA: edgekd serve (x86) <-> edgekd train --connect "
              f"({a.target}) through the fault proxy", flush=True)
        with phase("cross-ISA", results):
            cross_isa(u, ref, results)
        print("-- benchmark: per-step calls and time, memory net of the idle interpreter", flush=True)
        with phase("benchmark", results):
            benchmark(u, ref, results)
    except Failed as e:
        print(f"tests/arm/run: {a.target}: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        results["seconds"] = round(time.time() - t0, 1)
        Path(a.report).write_text(json.dumps(results, indent=1))
    print(f"-- {a.target}: all checks passed in {results['seconds']} s (figures: {a.report})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
