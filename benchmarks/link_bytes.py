"""Bytes on the link vs accuracy: naive streaming, fetch-once-and-cache, and early halting
with each codec, on digits (64-32-10 MLP student) and the synthetic sensor set (conv1d
student). One table; `--json` for machines.

    python benchmarks/link_bytes.py [--seeds 3] [--epochs 30] [--json]

Runs use the in-process link, which frames, encodes and decodes exactly what TCP carries
(the test suite checks byte-for-byte equality with a real socket), so the figures are the
link's real bytes without loopback noise in the timings.
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from edgekd.workflows import train_student, train_teacher  # noqa: E402
from edgekd.data import load_dataset  # noqa: E402
from edgekd.distill.config import TrainConfig  # noqa: E402
from edgekd.distill.halting import HaltingConfig  # noqa: E402
from edgekd.link.fetch_once import FetchOnceSource  # noqa: E402
from edgekd.link.local import LocalSource  # noqa: E402
from edgekd.link.settings import LinkConfig  # noqa: E402
from edgekd.teachers import load_teacher  # noqa: E402

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
}

VARIANTS = [  # name, halting, codec, x codec, fetch once
    ("naive f32", False, "f32", "f32", False),
    ("fetch once + cache", False, "f32", "f32", True),
    ("halting f32", True, "f32", "f32", False),
    ("halting f16", True, "f16", "f16", False),
    ("halting f16 soft, u8 x", True, "f16", "u8", False),
    ("halting topk, u8 x (default)", True, "topk", "u8", False),
]


def teacher_for(name, data, workdir):
    path = os.path.join(workdir, f"teacher-{name}.npz")
    if not os.path.exists(path):
        s = SETS[name]
        train_teacher(s["teacher"], data, path, s["teacher_epochs"])
    return load_teacher(path)


def run(name, data, teacher, variant, seed, epochs, workdir):
    label, halting, codec, x_codec, once = variant
    cfg = TrainConfig(epochs=epochs, seed=seed, halting=HaltingConfig(enabled=halting))
    src = LocalSource(teacher, data, codec, x_codec, LinkConfig().topk)
    if once:
        src = FetchOnceSource(src)
    t0 = time.perf_counter()
    r = train_student(SETS[name]["student"], src, cfg, tempfile.mkdtemp(dir=workdir))
    r["wall"] = time.perf_counter() - t0
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--sets", default="digits,sensor")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in a.sets.split(","):
            data = load_dataset(name)
            teacher = teacher_for(name, data, workdir)
            t_acc = float((teacher.logits(data.x_test).argmax(1) == data.y_test).mean())
            naive = None
            for v in VARIANTS:
                rs = [run(name, data, teacher, v, seed, a.epochs, workdir) for seed in range(a.seeds)]
                link = np.mean([r["bytes_down"] + r["bytes_up"] for r in rs])
                acc = np.mean([r["test_accuracy"] for r in rs])
                naive = naive or (link, acc)
                per_sample = 4 * (int(np.prod(data.input_shape)) + teacher.num_classes) + 8
                store = per_sample * len(data.y_train) if v[4] else 0
                rows.append({"set": name, "variant": v[0], "teacher_accuracy": t_acc,
                             "device_store_bytes": store,
                             "link_bytes": int(link), "vs_naive": link / naive[0],
                             "epochs": float(np.mean([r["epochs_run"] for r in rs])),
                             "wall_s": float(np.mean([r["wall"] for r in rs])),
                             "test_accuracy": float(acc),
                             "accuracy_std": float(np.std([r["test_accuracy"] for r in rs])),
                             "points_vs_naive": 100 * (acc - naive[1]), "seeds": a.seeds})
                if not a.json:
                    print(f"  {name}: {v[0]} done", file=sys.stderr)
    if a.json:
        print(json.dumps({"epochs": a.epochs, "rows": rows}))
        return
    head = (f"{'set':7} {'variant':30} {'link bytes':>12} {'vs naive':>9} {'kept':>8} "
            f"{'epochs':>7} {'wall s':>7} {'accuracy':>15} {'pts':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        kept = f"{r['device_store_bytes'] / 1024:.0f} KiB" if r["device_store_bytes"] else "-"
        print(f"{r['set']:7} {r['variant']:30} {r['link_bytes']:>12,} {r['vs_naive']:>8.1%} {kept:>8} "
              f"{r['epochs']:>7.1f} {r['wall_s']:>7.2f} {r['test_accuracy']:>8.4f}±{r['accuracy_std']:.4f} "
              f"{r['points_vs_naive']:>+6.2f}")
    print(f"(mean of {a.seeds} seeds, {a.epochs} epochs planned; pts = accuracy points vs naive; "
          f"kept = training data the device must store)")


if __name__ == "__main__":
    main()
