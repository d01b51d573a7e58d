"""Training speed, one CPU thread: edgekd (numpy, numba) beside PyTorch and JAX, and start-up.

    python benchmarks/speed.py [--rounds 15] [--budget 0.15] [--json] [--skip-startup | --startup-only]

Every engine trains the same students (benchmarks/models.py: the digits MLP, an MNIST-1D-like
conv1d student, a Fashion-MNIST-kind conv2d student, plus a teacher-sized MLP at batch 32)
with the same KD loss (T=4, alpha=0.9), the same optimizer (SGD, momentum 0.9) and the same
batches. JAX runs `jax.jit` of the whole KD step (forward, loss, grad, update); its column is
skipped with a note when JAX is not installed. Engines are interleaved round by round in one
process, each round about `--budget` seconds of steps; a figure is the median over rounds, and
the table reports ratios, so other load on the machine moves all engines alike. GFLOP/s use
edgekd's cost model (a training step = 3x the forward FLOPs) and are set against this core's
float32 matmul peak, measured here: a 1024^3 numpy sgemm on one thread, timed in the same
interleaved rounds as each row.
Start-up is `edgekd train` in a fresh process, to its first finished step, with edgekd's and
numba's on-disk caches empty (cold) and filled (warm: the steps built ahead of time, which
need no numba import; jit_warm: numba's JIT cache alone, as where no C compiler is), beside
numba's own floor (a fresh process that imports numba and calls one cached @njit function).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import MODELS, STUDENTS  # noqa: E402

BATCHES = (1, 8, 32)
T, ALPHA, LR, MOMENTUM = 4.0, 0.9, 0.01, 0.9
ENGINES = ("numpy", "numba", "torch", "jax")


def batch_data(spec, batch, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    c = spec["num_classes"]
    x = rng.standard_normal((batch, *spec["input_shape"])).astype(np.float32)
    t = (rng.standard_normal((batch, c)) * 3).astype(np.float32)
    y = rng.integers(0, c, batch)
    return x, t, y


def edgekd_step_fn(name, batch, backend_name):
    from edgekd.distill.optim import make_optimizer
    from edgekd.distill.steps import kd_step
    from edgekd.kernels import backend
    from edgekd.nn.model import Sequential
    K = backend.select(backend_name)
    spec = MODELS[name]
    m = Sequential(spec, seed=0)
    opt = make_optimizer("sgd", m.trainables(), LR, momentum=MOMENTUM)
    x, t, y = batch_data(spec, batch)

    def step():
        backend._active = K  # engines interleave in one process: each step uses its own
        kd_step(m, opt, x, t, y, T, ALPHA)
    return step


def torch_step_fn(name, batch):
    """The same spec as a torch module (channels-first, as torch's convolutions want)."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    spec = MODELS[name]
    shape = list(spec["input_shape"])
    mods = []
    chw = [shape[-1]] + shape[:-1] if len(shape) > 1 else shape
    for L in spec["layers"]:
        kind = L["type"]
        if kind == "dense":
            mods.append(torch.nn.Linear(chw[0], L["units"]))
            chw = [L["units"]]
        elif kind in ("conv1d", "conv2d"):
            k, s = L["kernel_size"], L.get("stride", 1)
            pad = (k - 1) // 2 if L.get("padding") == "same" else 0
            conv = torch.nn.Conv1d if kind == "conv1d" else torch.nn.Conv2d
            mods.append(conv(chw[0], L["filters"], k, stride=s, padding=pad))
            chw = [L["filters"]] + [(d + 2 * pad - k) // s + 1 for d in chw[1:]]
        elif kind == "maxpool2d":
            mods.append(torch.nn.MaxPool2d(L["pool_size"]))
            chw = [chw[0]] + [d // L["pool_size"] for d in chw[1:]]
        elif kind == "flatten":
            mods.append(torch.nn.Flatten())
            n = 1
            for d in chw:
                n *= d
            chw = [n]
        else:
            raise ValueError(kind)
        if L.get("activation") == "relu":
            mods.append(torch.nn.ReLU())
    m = torch.nn.Sequential(*mods)
    x, t, y = batch_data(spec, batch)
    x = torch.from_numpy(x if len(shape) == 1 else x.transpose(0, len(shape), *range(1, len(shape))).copy())
    t, y = torch.from_numpy(t), torch.from_numpy(y)
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM)

    def step():
        s = m(x)
        loss = (ALPHA * T * T * F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1),
                                         log_target=True, reduction="batchmean")
                + (1 - ALPHA) * F.cross_entropy(s, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def jax_step_fn(name, batch):
    """`jax.jit` of the whole KD step on the spec (channels-last, edgekd's initial weights)."""
    import jax
    import jax.numpy as jnp

    from edgekd.nn.model import Sequential
    spec = MODELS[name]
    m = Sequential(spec, seed=0)
    params = [(jnp.asarray(L.params["kernel"]), jnp.asarray(L.params["bias"]))
              for L in m.layers if "kernel" in L.params]
    layers = spec["layers"]

    def forward(params, x):
        it = iter(params)
        for L in layers:
            kind = L["type"]
            if kind == "dense":
                w, b = next(it)
                x = x @ w + b
            elif kind in ("conv1d", "conv2d"):
                w, b = next(it)
                nd = 1 if kind == "conv1d" else 2
                dn = ("NWC", "WIO", "NWC") if nd == 1 else ("NHWC", "HWIO", "NHWC")
                x = jax.lax.conv_general_dilated(
                    x, w, (L.get("stride", 1),) * nd, L.get("padding", "valid").upper(),
                    dimension_numbers=dn) + b
            elif kind == "maxpool2d":
                p = L["pool_size"]
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, p, p, 1), (1, p, p, 1), "VALID")
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            if L.get("activation") == "relu":
                x = jax.nn.relu(x)
        return x

    def loss_fn(params, x, t, y):
        s = forward(params, x)
        log_ps, log_pt = jax.nn.log_softmax(s / T), jax.nn.log_softmax(t / T)
        kl = jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=1).mean()
        ce = -jnp.take_along_axis(jax.nn.log_softmax(s), y[:, None], axis=1).mean()
        return ALPHA * T * T * kl + (1 - ALPHA) * ce

    @jax.jit
    def step(params, buf, x, t, y):
        loss, g = jax.value_and_grad(loss_fn)(params, x, t, y)
        buf = jax.tree_util.tree_map(lambda b, gi: MOMENTUM * b + gi, buf, g)
        params = jax.tree_util.tree_map(lambda p, b: p - LR * b, params, buf)
        return params, buf, loss

    x, t, y = (jnp.asarray(a) for a in batch_data(spec, batch))
    state = {"p": params, "b": jax.tree_util.tree_map(jnp.zeros_like, params)}

    def run():
        state["p"], state["b"], loss = step(state["p"], state["b"], x, t, y)
        return loss
    return run


def have_jax():
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def make_step(engine, name, batch):
    if engine == "torch":
        return torch_step_fn(name, batch)
    if engine == "jax":
        return jax_step_fn(name, batch)
    return edgekd_step_fn(name, batch, engine)


def timed(step, steps):
    t0 = time.perf_counter()
    out = None
    for _ in range(steps):
        out = step()
    if out is not None and hasattr(out, "block_until_ready"):
        out.block_until_ready()  # JAX dispatches asynchronously
    return (time.perf_counter() - t0) / steps


def throughput(engines, name, batch, rounds, budget):
    """Per-round seconds per step of each engine (and of the sgemm peak), engines interleaved,
    each about `budget` seconds per round."""
    fns = {e: make_step(e, name, batch) for e in engines}
    fns["sgemm"] = sgemm_step()
    steps = {}
    for e, fn in fns.items():
        timed(fn, 3)  # compile (numba, XLA) and first-touch
        per = timed(fn, 10 if e != "sgemm" else 2)
        steps[e] = max(2, int(budget / per))
    runs = {e: [] for e in fns}
    for _ in range(rounds):
        for e, fn in fns.items():
            runs[e].append(timed(fn, steps[e]))
    return runs


def ratio(runs, a, b):
    """Speed of a over b: the median over rounds of b's step time / a's in the same round."""
    return statistics.median(tb / ta for ta, tb in zip(runs[a], runs[b]))


def sgemm_step():
    """One 1024^3 float32 matmul through numpy's BLAS (one thread): this core's matmul peak,
    timed in the same interleaved rounds as the engines, so load on the machine hits both."""
    import numpy as np
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    out = np.empty_like(a)
    return lambda: np.matmul(a, a, out=out)


PEAK_FLOP = 2 * 1024 ** 3


FLOOR = """import sys, time
from numba import njit


@njit(cache=True)
def one(a):
    return a + 1


one(1)
print(f"edgekd: first step done at {time.time()}", file=sys.stderr, flush=True)
"""


def startup(out_dir, rounds=3):
    """Seconds from process start to the end of the first training step of `edgekd train`
    (digits, the MLP student), numpy and numba with numba's cache cold then warm; beside them
    numba's own floor: a process that imports numba and calls one cached @njit function.
    Warm figures are medians of `rounds` interleaved runs (the cold one runs once)."""
    spec_path = os.path.join(out_dir, "student.json")
    with open(spec_path, "w") as f:
        json.dump(MODELS["mlp"], f)
    teacher_spec, teacher = os.path.join(out_dir, "teacher.json"), os.path.join(out_dir, "teacher.npz")
    with open(teacher_spec, "w") as f:
        json.dump(MODELS["teacher_mlp"], f)
    subprocess.run([sys.executable, "-m", "edgekd", "teacher", "--spec", teacher_spec, "--data",
                    "digits", "--epochs", "2", "--backend", "numpy", "-o", teacher],
                   capture_output=True, check=True, timeout=900)
    floor = os.path.join(out_dir, "numba_floor.py")
    with open(floor, "w") as f:
        f.write(FLOOR)
    env = {**os.environ, "NUMBA_CACHE_DIR": os.path.join(out_dir, "numba-cache")}

    def timed(label, backend):
        aot = "0" if label == "numba_jit_warm" else os.environ.get("EDGEKD_AOT", "1")
        args = ([floor] if backend is None else
                [__file__, "--first-step", "train", "--data", "digits", "--teacher", teacher,
                 "--student", spec_path, "--epochs", "1", "--backend", backend,
                 "--out", os.path.join(out_dir, f"{label}-{time.time_ns()}"), "--json"])
        t0 = time.time()
        p = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                           env={**env, "EDGEKD_AOT": aot}, check=False, timeout=900)
        total = time.time() - t0
        stamp = [ln for ln in p.stderr.splitlines() if ln.startswith("edgekd: first step done at ")]
        if p.returncode != 0 or not stamp:
            return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1]}
        try:
            rss = json.loads(p.stdout.strip().splitlines()[-1]).get("peak_rss_mib")
        except (ValueError, IndexError):
            rss = None
        return {"first_step_s": float(stamp[0].rsplit(" ", 1)[1]) - t0, "process_s": total,
                "peak_rss_mib": rss}

    res = {"numba_cold": timed("numba_cold", "numba")}
    timed("floor_compile", None)          # the floor's own function, compiled once, untimed
    runs = {"numpy": [], "numba_warm": [], "numba_jit_warm": [], "numba_floor": []}
    for _ in range(rounds):
        for label, backend in (("numpy", "numpy"), ("numba_warm", "numba"),
                               ("numba_jit_warm", "numba"), ("numba_floor", None)):
            runs[label].append(timed(label, backend))
    for label, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            res[label] = rs[0]
            continue
        res[label] = {k: statistics.median(r[k] for r in ok) if ok[0][k] is not None else None
                      for k in ("first_step_s", "process_s", "peak_rss_mib")}
        res[label]["rounds"] = len(ok)
    return {k: res[k] for k in ("numpy", "numba_cold", "numba_warm", "numba_jit_warm", "numba_floor")}


def first_step_worker(args):
    """Run the `edgekd` CLI with `args`, stamping on stderr when its first training step ends."""
    from edgekd.cli import main as cli
    from edgekd.distill import trainer
    inner = trainer.kd_step

    def stamped(*a, **k):
        res = inner(*a, **k)
        if trainer.kd_step is stamped:
            print(f"edgekd: first step done at {time.time()}", file=sys.stderr, flush=True)
            trainer.kd_step = inner
        return res
    trainer.kd_step = stamped
    cli(args)


def step_flops(name, batch):
    """FLOPs of one training step by edgekd's cost model: 3x the forward pass."""
    from edgekd.design.cost import model_cost
    return model_cost(MODELS[name], batch=batch).train_flops_per_sample * batch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median taken)")
    ap.add_argument("--budget", type=float, default=0.15, help="seconds of steps per round")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--startup-only", action="store_true")
    ap.add_argument("--startup-rounds", type=int, default=3, help="warm start-up runs (median taken)")
    ap.add_argument("--models", nargs="+", choices=list(MODELS), help="only these rows")
    ap.add_argument("--first-step", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.first_step:
        return first_step_worker(a.first_step)
    if a.startup_only:
        start = startup(tempfile.mkdtemp(prefix="edgekd-speed-"), a.startup_rounds)
        return print(json.dumps({"startup": start})) if a.json else print_startup(start)
    engines = [e for e in ENGINES if e != "jax" or have_jax()]
    notes = [] if "jax" in engines else ["JAX is not installed (pip install 'jax[cpu]'): its column is skipped"]
    rows = []
    cases = [(n, b) for n in STUDENTS for b in BATCHES] + [("teacher_mlp", 32)]
    if a.models:
        cases = [(n, b) for n, b in cases if n in a.models]
    pairs = [("numba", "jax"), ("numba", "numpy"), ("numpy", "torch"), ("numba", "torch"),
             ("jax", "torch")]
    for name, batch in cases:
        runs = throughput(engines, name, batch, a.rounds, a.budget)
        sps = {e: batch / statistics.median(v) for e, v in runs.items() if e != "sgemm"}
        flop = step_flops(name, batch)
        g = flop * sps["numba"] / batch / 1e9
        pct = 100 * statistics.median((flop / tn) / (PEAK_FLOP / ts)  # numba's rate over sgemm's
                                      for tn, ts in zip(runs["numba"], runs["sgemm"]))
        rows.append({"model": name, "batch": batch, "samples_per_s": sps,
                     "ratios": {f"{x}/{y}": ratio(runs, x, y) for x, y in pairs
                                if x in engines and y in engines},
                     "peak_gflops": PEAK_FLOP / statistics.median(runs["sgemm"]) / 1e9,
                     "numba_gflops": g, "numba_pct_peak": pct})
    start = {} if a.skip_startup else startup(tempfile.mkdtemp(prefix="edgekd-speed-"),
                                               a.startup_rounds)
    result = {"matmul_peak_gflops": statistics.median(r["peak_gflops"] for r in rows),
              "rows": rows, "startup": start, "notes": notes,
              "rounds": a.rounds, "budget_s": a.budget}
    if a.json:
        print(json.dumps(result))
        return
    print_table(result, "jax" in engines)


def print_table(result, jax):
    cols = list(result["rows"][0]["ratios"])
    print(f"{'model':12}{'batch':>6}" + "".join(f"{c:>13}" for c in cols)
          + f"{'numba GFLOP/s':>15}{'% peak':>8}")
    for r in result["rows"]:
        print(f"{r['model']:12}{r['batch']:>6}" + "".join(f"{r['ratios'][c]:>13.2f}" for c in cols)
              + f"{r['numba_gflops']:>15.2f}{r['numba_pct_peak']:>8.1f}")
    print("\nratios: median over interleaved rounds of the per-round speed ratio (same model, loss,"
          "\noptimizer and batch); % peak: numba's flop/s over this core's float32 matmul rate "
          "(numpy\nsgemm 1024^3, one thread) timed in the same rounds "
          f"(median {result['matmul_peak_gflops']:.1f} GFLOP/s)")
    for n in result["notes"]:
        print(f"note: {n}")
    if result["startup"]:
        print()
        print_startup(result["startup"])


def print_startup(start):
    print("`edgekd train` (digits, MLP) from process start to its first finished step (warm:"
          " median of interleaved runs;\nnumba_warm: steps built ahead of time; numba_jit_warm:"
          " numba's JIT cache only;\nnumba_floor: a process importing numba and calling one "
          "cached @njit function):")
    for k, v in start.items():
        if "error" in v:
            print(f"  {k:14} failed: {v['error']}")
        else:
            rss = f"   peak RSS {v['peak_rss_mib']:.0f} MiB" if v.get("peak_rss_mib") else ""
            print(f"  {k:14} {v['first_step_s']:6.2f} s   (whole run {v['process_s']:6.2f} s){rss}")


if __name__ == "__main__":
    main()
