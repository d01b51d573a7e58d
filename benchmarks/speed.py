"""Training speed and footprint: edgekd (numpy, numba) against PyTorch on one CPU thread.

    python benchmarks/speed.py [--steps 300] [--json]

Same models (a 64-32-10 MLP; a conv1d student on [64, 3] inputs), same KD loss (T=4,
alpha=0.9), same optimizer (Adam), same batches. Throughput is measured side by side in one
process, engines interleaved and best-of-3, and reported as ratios to PyTorch. Peak RSS and
start-up (import, build, numba compile or cache load, first step) are measured in fresh
processes. GFLOP/s use edgekd's cost model (a training step = 3x the forward FLOPs) and are
set against this core's float32 matmul peak.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

MODELS = {
    "mlp": {"input_shape": [64], "num_classes": 10, "layers": [
        {"type": "dense", "units": 32, "activation": "relu"}, {"type": "dense", "units": 10}]},
    "conv1d": {"input_shape": [64, 3], "num_classes": 5, "layers": [
        {"type": "conv1d", "filters": 8, "kernel_size": 5, "stride": 2, "activation": "relu"},
        {"type": "conv1d", "filters": 16, "kernel_size": 3, "activation": "relu"},
        {"type": "global_avgpool"}, {"type": "dense", "units": 5}]},
}
BATCHES = (1, 8, 32)
ENGINES = ("torch", "numpy", "numba")
T, ALPHA, LR = 4.0, 0.9, 1e-3


def torch_step_fn(name, batch):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    if name == "mlp":
        m = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        x, c = torch.randn(batch, 64), 10
    else:  # channels-first twin of the edgekd conv1d spec
        m = torch.nn.Sequential(torch.nn.Conv1d(3, 8, 5, stride=2), torch.nn.ReLU(),
                                torch.nn.Conv1d(8, 16, 3), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(16, 5))
        x, c = torch.randn(batch, 3, 64), 5
    t, y = torch.randn(batch, c) * 3, torch.randint(0, c, (batch,))
    opt = torch.optim.Adam(m.parameters(), lr=LR)

    def step():
        s = m(x)
        loss = (ALPHA * T * T * F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1),
                                         log_target=True, reduction="batchmean")
                + (1 - ALPHA) * F.cross_entropy(s, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def edgekd_step_fn(name, batch, backend_name):
    import numpy as np

    from edgekd.distill.optim import make_optimizer
    from edgekd.distill.steps import kd_step
    from edgekd.kernels import backend
    from edgekd.nn.model import Sequential
    backend.select(backend_name)
    spec = MODELS[name]
    m = Sequential(spec, seed=0)
    opt = make_optimizer("adam", m.trainables(), LR)
    rng = np.random.default_rng(0)
    c = spec["num_classes"]
    x = rng.standard_normal((batch, *spec["input_shape"])).astype(np.float32)
    t = (rng.standard_normal((batch, c)) * 3).astype(np.float32)
    y = rng.integers(0, c, batch)
    K = backend.active()

    def step():
        backend._active = K  # engines interleave in one process: each step uses its own
        kd_step(m, opt, x, t, y, T, ALPHA)
    return step


def make_step(engine, name, batch):
    return torch_step_fn(name, batch) if engine == "torch" else edgekd_step_fn(name, batch, engine)


def time_steps(step, steps):
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def throughput(steps):
    """samples/s per (model, batch, engine), interleaved, best of 3 rounds."""
    out = {}
    for name in MODELS:
        for batch in BATCHES:
            fns = {e: make_step(e, name, batch) for e in ENGINES}
            for fn in fns.values():
                time_steps(fn, 20)  # warm-up (and numba compile)
            best = {e: float("inf") for e in ENGINES}
            for _ in range(3):
                for e, fn in fns.items():
                    best[e] = min(best[e], time_steps(fn, steps))
            out[(name, batch)] = {e: batch / best[e] for e in ENGINES}
    return out


def matmul_peak():
    import numpy as np
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    a @ a
    t0 = time.perf_counter()
    for _ in range(5):
        a @ a
    return 5 * 2 * 1024 ** 3 / (time.perf_counter() - t0)


def worker(engine, name, batch, steps):
    """Run in a fresh process: start-up time to the first finished step, then peak RSS."""
    t0 = time.perf_counter()
    step = make_step(engine, name, batch)
    step()
    start = time.perf_counter() - t0
    time_steps(step, steps)
    from edgekd.distill.trainer import peak_rss_mib
    rss = peak_rss_mib()
    print(json.dumps({"start_s": start, "peak_rss_mib": rss}))


def fresh(engine, name, batch, steps, env=None):
    cmd = [sys.executable, __file__, "--worker", engine, name, str(batch), str(steps)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t0
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a.worker[0], a.worker[1], int(a.worker[2]), int(a.worker[3]))
    from edgekd.design.cost import model_cost
    peak = matmul_peak()
    tp = throughput(a.steps)
    rows = []
    for (name, batch), sps in tp.items():
        flops = 3 * model_cost(MODELS[name], batch=batch).flops
        rows.append({"model": name, "batch": batch, **{f"{e}_samples_per_s": v for e, v in sps.items()},
                     "numpy_vs_torch": sps["numpy"] / sps["torch"],
                     "numba_vs_torch": sps["numba"] / sps["torch"],
                     "numba_gflops": sps["numba"] * flops / 1e9,
                     "numpy_gflops": sps["numpy"] * flops / 1e9})
    footprint = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        for e in ENGINES:
            footprint[e] = fresh(e, "mlp", 32, 100, env)
        footprint["numba_cold"] = footprint.pop("numba")
        footprint["numba_warm"] = fresh("numba", "mlp", 32, 100, env)
    result = {"matmul_peak_gflops": peak / 1e9, "rows": rows, "footprint": footprint,
              "steps": a.steps}
    if a.json:
        print(json.dumps(result))
        return
    print(f"{'model':7}{'batch':>6}{'torch/s':>10}{'numpy/s':>10}{'numba/s':>10}"
          f"{'numpy x':>9}{'numba x':>9}{'numba GFLOP/s':>15}")
    for r in rows:
        print(f"{r['model']:7}{r['batch']:>6}{r['torch_samples_per_s']:>10,.0f}"
              f"{r['numpy_samples_per_s']:>10,.0f}{r['numba_samples_per_s']:>10,.0f}"
              f"{r['numpy_vs_torch']:>9.2f}{r['numba_vs_torch']:>9.2f}{r['numba_gflops']:>15.3f}")
    print(f"\nthis core's float32 matmul peak (1024^3, one thread): {peak / 1e9:.1f} GFLOP/s")
    print("\nstart-up to the first step and peak RSS (fresh process, MLP, batch 32):")
    for e, f in footprint.items():
        print(f"  {e:11} start {f['start_s']:6.2f} s   process {f['process_s']:6.2f} s   "
              f"peak RSS {f['peak_rss_mib']:6.1f} MiB")


if __name__ == "__main__":
    main()
