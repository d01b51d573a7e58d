"""Link bytes against accuracy, per data set and device memory budget: naive float32
streaming, fetch-what-fits (keep as many samples as the budget holds, stream the rest every
epoch), and early halting (the defaults, and the old rule for contrast) at the same budget.

    python benchmarks/link_bytes.py [--seeds 5] [--epochs 30] [--sets digits,sensor,iris,fashion-mnist]
                                    [--fmnist-train 10000] [--budgets all,10%,1%]
                                    [--variants naive,fetch,halting,old] [--workdir DIR]
                                    [--json] [--plot docs/halting.png]
    python benchmarks/link_bytes.py --tables A.json B.json [--plot docs/halting.png]

`--variants` also takes topk1, topk2, topk3: the default rule with soft labels cut to the
k largest logits (the default is 4), for bytes against accuracy; and fetch-echo1,
halting-echo1: fetch what fits and the default rule training each batch once
(`--echo 1`), for what data echoing buys. `--echo N` sets it for every variant.

Budgets are fractions of the training split's encoded size (what keeping every sample
would cost the device: all of it, 10% and 1% by default), or sizes (`1MiB`, the default
--cache-budget of `edgekd train`). Every variant but the naive one speaks the
default codecs (top-k soft labels, u8 inputs, zlib BATCH payloads), so the columns compare
halting and keeping, not codecs. "pts" is accuracy against fetch-what-fits at the same budget, which trains on
every sample every epoch: the same run without halting. Runs use the in-process link,
which frames and encodes exactly what TCP carries (the tests check it byte for byte).
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from edgekd.data import load_dataset  # noqa: E402
from edgekd.design.units import parse_bytes  # noqa: E402
from edgekd.distill.config import TrainConfig  # noqa: E402
from edgekd.distill.device_cache import LABEL_BYTES  # noqa: E402
from edgekd.distill.halting import HaltingConfig  # noqa: E402
from edgekd.link.local import LocalSource  # noqa: E402
from edgekd.link.settings import LinkConfig  # noqa: E402
from edgekd.teachers import load_teacher  # noqa: E402
from edgekd.workflows import train_student, train_teacher  # noqa: E402

SETS = {
    "digits": {
        "teacher": {"input_shape": [64], "num_classes": 10, "layers": [
            {"type": "dense", "units": 256, "activation": "relu"},
            {"type": "dense", "units": 256, "activation": "relu"},
            {"type": "dense", "units": 10}]},
        "student": {"input_shape": [64], "num_classes": 10, "layers": [
            {"type": "dense", "units": 32, "activation": "relu"}, {"type": "dense", "units": 10}]},
        "teacher_epochs": 30,
    },
    "sensor": {
        "teacher": {"input_shape": [64, 3], "num_classes": 5, "layers": [
            {"type": "conv1d", "filters": 32, "kernel_size": 5, "padding": "same", "activation": "relu"},
            {"type": "maxpool1d", "pool_size": 2},
            {"type": "conv1d", "filters": 64, "kernel_size": 5, "padding": "same", "activation": "relu"},
            {"type": "global_avgpool"}, {"type": "dense", "units": 5}]},
        "student": {"input_shape": [64, 3], "num_classes": 5, "layers": [
            {"type": "conv1d", "filters": 8, "kernel_size": 5, "stride": 2, "activation": "relu"},
            {"type": "conv1d", "filters": 16, "kernel_size": 3, "activation": "relu"},
            {"type": "global_avgpool"}, {"type": "dense", "units": 5}]},
        "teacher_epochs": 20,
    },
    "iris": {
        "teacher": {"input_shape": [4], "num_classes": 3, "layers": [
            {"type": "dense", "units": 64, "activation": "relu"},
            {"type": "dense", "units": 64, "activation": "relu"}, {"type": "dense", "units": 3}]},
        "student": {"input_shape": [4], "num_classes": 3, "layers": [
            {"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "units": 3}]},
        "teacher_epochs": 200,
        "epochs": 150,   # 108 training samples: 4 steps an epoch
    },
    "fashion-mnist": {
        "teacher": {"input_shape": [28, 28, 1], "num_classes": 10, "layers": [
            {"type": "conv2d", "filters": 16, "kernel_size": 3, "activation": "relu"},
            {"type": "maxpool2d", "pool_size": 2},
            {"type": "conv2d", "filters": 32, "kernel_size": 3, "activation": "relu"},
            {"type": "maxpool2d", "pool_size": 2},
            {"type": "flatten"}, {"type": "dense", "units": 64, "activation": "relu"},
            {"type": "dense", "units": 10}]},
        "student": {"input_shape": [28, 28, 1], "num_classes": 10, "layers": [
            {"type": "conv2d", "filters": 8, "kernel_size": 3, "stride": 2, "activation": "relu"},
            {"type": "conv2d", "filters": 16, "kernel_size": 3, "stride": 2, "activation": "relu"},
            {"type": "flatten"}, {"type": "dense", "units": 10}]},
        "teacher_epochs": 8,
        "epochs": 15,
    },
}

OLD_RULE = {"eps": 0.05, "threshold": "absolute", "policy": "skip"}  # before docs/halting.md
K = LinkConfig.topk
NAIVE = ("naive f32", {"enabled": False}, "f32", K)
VARIANTS = {  # --variants name: label, halting settings, soft codec (inputs: u8 unless f32), k
    "fetch": ("fetch what fits", {"enabled": False}, "topk", K),
    "halting": ("halting (defaults)", {}, "topk", K),
    "old": ("halting, old rule", OLD_RULE, "topk", K),
    # each batch trained once, as before data echoing (asked for by name)
    "fetch-echo1": ("fetch what fits, echo 1", {"enabled": False}, "topk", K, 1),
    "halting-echo1": ("halting, echo 1", {}, "topk", K, 1),
}
DEFAULT_VARIANTS = ("naive", "fetch", "halting", "old")
# top-k with fewer logits than the default, on the default rule (asked for by name)
VARIANTS.update({f"topk{k}": (f"halting, top-{k} labels", {}, "topk", k) for k in (1, 2, 3)})


def budget_of(text, whole):
    """A --budgets entry: 'all', a share of the encoded split ('10%'), or a size ('1MiB')."""
    if text == "all":
        return 1 << 40
    if text.endswith("%"):
        return int(float(text[:-1]) / 100 * whole)
    return parse_bytes(text)


def load(name, fmnist_train):
    data = load_dataset(name)
    if name == "fashion-mnist":
        data = data.head(fmnist_train, min(max(fmnist_train // 5, 1000), len(data.y_test)))
    return data


def teacher_for(name, data, workdir):
    path = os.path.join(workdir, f"teacher-{name}-{len(data.y_train)}.npz")
    if not os.path.exists(path):
        s = SETS[name]
        train_teacher(s["teacher"], data, path, s["teacher_epochs"])
    return load_teacher(path)


def split_bytes(data, classes):
    """What keeping the whole training split costs the device in the default codecs."""
    k = LinkConfig().topk
    row = int(np.prod(data.input_shape)) + 2 * min(k, classes) + 3 + LABEL_BYTES
    return row * round(len(data.y_train) * (1 - TrainConfig().val_fraction))


def epochs_for(name, a):
    return a.epochs or SETS[name].get("epochs", 30)


def echo_of(variant, echo):
    """A variant's own echo (its fifth field), else the run's (--echo)."""
    return variant[4] if len(variant) > 4 else echo


def run(name, data, teacher, variant, budget, seed, epochs, workdir, echo=TrainConfig.echo):
    label, halting, codec, k = variant[:4]
    cfg = TrainConfig(epochs=epochs, seed=seed, halting=HaltingConfig(**halting),
                      cache_budget=budget, echo=echo_of(variant, echo))
    link = LinkConfig.choose(codec, topk=k)
    src = LocalSource(teacher, data, **link.source_kwargs())
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as out:
        r = train_student(SETS[name]["student"], src, cfg, out)
    r["wall"], r["echo"] = time.perf_counter() - t0, cfg.echo
    return r


def summarise(name, label, budget_name, rs, base_acc):
    """Means over seeds; points against `base_acc` (per seed) when given."""
    acc = np.array([r["test_accuracy"] for r in rs])
    link = np.array([r["bytes_down"] + r["bytes_up"] for r in rs], float)
    naive = np.array([r["bytes_naive_planned"] for r in rs], float)
    return {"set": name, "budget": budget_name, "variant": label, "seeds": len(rs),
            "epochs_planned": rs[0]["epochs_planned"], "echo": rs[0].get("echo", 1),
            "link_bytes": int(link.mean()), "vs_naive": float((link / naive).mean()),
            "kept_bytes": int(np.mean([r["kept_bytes"] for r in rs])),
            "epochs": float(np.mean([r["epochs_run"] for r in rs])),
            "wall_s": float(np.mean([r["wall"] for r in rs])),
            "test_accuracy": float(acc.mean()), "accuracy_std": float(acc.std()),
            "points": None if base_acc is None else float(100 * (acc - base_acc).mean()),
            "points_std": None if base_acc is None else float(100 * (acc - base_acc).std())}


def bench_set(name, a, workdir, say):
    data = load(name, a.fmnist_train)
    teacher = teacher_for(name, data, workdir)
    whole = split_bytes(data, teacher.num_classes)
    seeds, epochs = range(a.seeds), epochs_for(name, a)
    variants = [VARIANTS[v] for v in a.variants.split(",") if v != "naive"]
    rows = []
    if "naive" in a.variants.split(","):
        rs = [run(name, data, teacher, NAIVE, 0, s, epochs, workdir, a.echo) for s in seeds]
        rows.append(summarise(name, NAIVE[0], "0", rs, None))
        say(f"{name}: naive done")
    for budget_name in a.budgets.split(","):
        budget = budget_of(budget_name, whole)
        first, base = None, {}   # pts: against the run without halting at the same echo
        for v in variants:
            rs = [run(name, data, teacher, v, budget, s, epochs, workdir, a.echo) for s in seeds]
            acc = np.array([r["test_accuracy"] for r in rs])
            first = acc if first is None else first
            if not v[1].get("enabled", True):
                base.setdefault(echo_of(v, a.echo), acc)
            rows.append(summarise(name, v[0], budget_name, rs,
                                  base.get(echo_of(v, a.echo), first)))
            say(f"{name}: {budget_name} {v[0]} done")
    return rows


def table(rows, a):
    head = (f"{'set':13} {'budget':>6} {'variant':23} {'link bytes':>12} {'vs naive':>9} "
            f"{'kept':>9} {'epochs':>6} {'wall s':>7} {'accuracy':>15} {'pts':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        kb = r["kept_bytes"]
        kept = "-" if not kb else f"{kb / 1024:.0f} KiB" if kb >= 10240 else f"{kb:,} B"
        pts = "" if r["points"] is None else f"{r['points']:+.2f}±{r['points_std']:.2f}"
        lines.append(f"{r['set']:13} {r['budget']:>6} {r['variant']:23} {r['link_bytes']:>12,} "
                     f"{r['vs_naive']:>8.1%} {kept:>9} {r['epochs']:>6.1f} {r['wall_s']:>7.2f} "
                     f"{r['test_accuracy']:>8.4f}±{r['accuracy_std']:.4f} {pts:>12}")
    echoes = sorted({r.get("echo", 1) for r in rows})
    lines.append(f"(mean of {a.seeds} seeds; echo {'/'.join(map(str, echoes))}; epochs planned: "
                 + ", ".join(f"{s} {e}" for s, e in dict((r["set"], r["epochs_planned"])
                                                          for r in rows).items())
                 + "; budget = device memory as "
                 "a share of the encoded training split, or a size; pts = accuracy points against fetch "
                 "what fits at the same budget, ± over seeds; kept = what the device stored)")
    return "\n".join(lines)


def plot(rows, path):
    """Bytes against accuracy, one panel per data set; the Pareto front dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sets = list(dict.fromkeys(r["set"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    marks = {"0": "X", "all": "o", "10%": "s", "1%": "^"}
    for extra, mark in zip(sorted({r["budget"] for r in rows} - set(marks)), "Dvp*h"):
        marks[extra] = mark
    colours = {"naive f32": "black", "fetch what fits": "tab:blue",
               "halting (defaults)": "tab:green", "halting, old rule": "tab:red",
               "fetch what fits, echo 1": "tab:cyan", "halting, echo 1": "tab:olive"}
    colours = {k: c for k, c in colours.items() if any(r["variant"] == k for r in rows)}
    for ax, name in zip(axes[0], sets):
        mine = [r for r in rows if r["set"] == name]
        for r in mine:
            ax.errorbar(100 * r["vs_naive"], r["test_accuracy"], yerr=r["accuracy_std"],
                        fmt=marks[r["budget"]], color=colours.get(r["variant"], "grey"),
                        capsize=2)
        front = sorted(mine, key=lambda r: r["vs_naive"])
        best, pareto = -1.0, []
        for r in front:
            if r["test_accuracy"] > best:
                best = r["test_accuracy"]
                pareto.append(r)
        ax.plot([100 * r["vs_naive"] for r in pareto], [r["test_accuracy"] for r in pareto],
                "--", color="grey", lw=1)
        ax.set_xscale("log")
        ax.set_title(name)
        ax.set_xlabel("link bytes, % of naive float32 streaming")
    axes[0][0].set_ylabel("test accuracy")
    handles = [plt.Line2D([], [], color=c, marker="o", ls="") for c in colours.values()]
    handles += [plt.Line2D([], [], color="grey", marker=m, ls="") for m in marks.values()]
    labels = list(colours) + [f"budget {b}" for b in marks]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 9), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs planned [30; iris 150, fashion-mnist 15]")
    ap.add_argument("--sets", default="digits,sensor,iris,fashion-mnist")
    ap.add_argument("--fmnist-train", type=int, default=10000,
                    help="Fashion-MNIST training samples (the first N; 60000 is the whole set)")
    ap.add_argument("--budgets", default="all,10%,1%",
                    help="device budgets: all, shares of the encoded split (10%%), sizes (1MiB)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help=f"which runs: naive,{','.join(VARIANTS)} (fetch what fits is the "
                         "baseline of pts: list it first)")
    ap.add_argument("--echo", type=int, default=TrainConfig.echo,
                    help="steps per batch for every variant [%(default)s, edgekd's default]")
    ap.add_argument("--workdir", help="keep the teachers here (default: a temporary folder)")
    ap.add_argument("--plot", metavar="PNG", help="also draw bytes against accuracy")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tables", nargs="+", metavar="JSON",
                    help="run nothing: print (and --plot) the rows of earlier --json outputs")
    a = ap.parse_args(argv)
    say = (lambda msg: None) if a.json else (lambda msg: print(f"  {msg}", file=sys.stderr))
    rows = []
    if a.tables:
        for path in a.tables:
            with open(path, encoding="utf-8") as f:
                rows += json.load(f)["rows"]
        a.seeds = "/".join(sorted({str(r["seeds"]) for r in rows}))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = a.workdir or tmp
        os.makedirs(workdir, exist_ok=True)
        for name in [] if a.tables else a.sets.split(","):
            rows += bench_set(name, a, workdir, say)
    if a.plot:
        plot(rows, a.plot)
    if a.json:
        print(json.dumps({"seeds": a.seeds, "rows": rows}))
    else:
        print(table(rows, a))


if __name__ == "__main__":
    main()
