"""The measurements that chose halting's defaults (docs/halting.md): settle rules against
fetch-what-fits, at a device budget where most samples must be streamed (1% of the encoded
training split) and at one that holds them all.

    python benchmarks/halting_rules.py [--seeds 5] [--sets digits,sensor] [--budgets 1%,all]
                                       [--rules default,probe] [--echo 3] [--json]

--rules keeps the rules whose label holds one of the words (the baseline always runs).

Same data sets, students, teachers and accounting as benchmarks/link_bytes.py.
"""

import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # as link_bytes: the same teachers, bit for bit

import numpy as np  # noqa: E402

from edgekd.distill.config import TrainConfig  # noqa: E402

from link_bytes import K, epochs_for, load, run, split_bytes, summarise, teacher_for  # noqa: E402

RULES = (  # label, halting settings (the rest are the defaults)
    ("no halting (fetch what fits)", {"enabled": False}),
    ("absolute eps 0.05, skip (old)", {"threshold": "absolute", "eps": 0.05, "policy": "skip"}),
    ("absolute eps 0.05", {"threshold": "absolute", "eps": 0.05}),
    ("absolute eps 0.005", {"threshold": "absolute", "eps": 0.005}),
    ("relative eps 0.01", {"eps": 0.01}),
    ("relative eps 0.02 (default)", {}),
    ("relative eps 0.03", {"eps": 0.03}),
    ("relative eps 0.02, settle after 10", {"settle_after": 10}),
    ("relative eps 0.02, plateau 8 epochs", {"patience_epochs": 8}),
    ("relative eps 0.015", {"eps": 0.015}),
    ("relative eps 0.02, kept: rehearse 0.5", {"rehearse_prob": 0.5}),
    ("relative eps 0.05", {"eps": 0.05}),
    ("relative eps 0.02, probe 0.1", {"probe_prob": 0.1}),
    ("relative eps 0.05, probe 0.1", {"eps": 0.05, "probe_prob": 0.1}),
    ("relative eps 0.05, probe 0.2", {"eps": 0.05, "probe_prob": 0.2}),
)
BUDGETS = {"1%": 0.01, "10%": 0.10, "all": None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sets", default="digits,sensor")
    ap.add_argument("--budgets", default="1%,all", help="device budgets: 1%%, 10%%, all")
    ap.add_argument("--rules", help="comma-separated words: only the rules whose label holds one")
    ap.add_argument("--echo", type=int, default=TrainConfig.echo,
                    help="steps per batch for every rule [%(default)s, edgekd's default]")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    words = a.rules.split(",") if a.rules else None
    rules = [r for i, r in enumerate(RULES)
             if i == 0 or words is None or any(w in r[0] for w in words)]
    a.epochs, a.fmnist_train = None, 3000
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in a.sets.split(","):
            data = load(name, a.fmnist_train)
            teacher = teacher_for(name, data, workdir)
            whole = split_bytes(data, teacher.num_classes)
            for budget_name in a.budgets.split(","):
                frac = BUDGETS[budget_name]
                budget = 1 << 40 if frac is None else int(frac * whole)
                base = None
                for label, halting in rules:
                    if budget_name != "all" and "rehearse_prob" in halting:
                        continue   # what replaying kept samples costs: only where all are kept
                    rs = [run(name, data, teacher, (label, halting, "topk", K), budget, s,
                              epochs_for(name, a), workdir, a.echo) for s in range(a.seeds)]
                    acc = np.array([r["test_accuracy"] for r in rs])
                    base = acc if base is None else base
                    rows.append(summarise(name, label, budget_name, rs, base))
                    if not a.json:
                        print(f"  {name} {budget_name}: {label} done", file=sys.stderr)
    if a.json:
        print(json.dumps({"seeds": a.seeds, "rows": rows}))
        return
    head = f"{'set':8} {'budget':>6} {'rule':38} {'vs naive':>9} {'epochs':>6} {'accuracy':>15} {'pts':>12}"
    print(head)
    print("-" * len(head))
    for r in rows:
        pts = f"{r['points']:+.2f}±{r['points_std']:.2f}"
        print(f"{r['set']:8} {r['budget']:>6} {r['variant']:38} {r['vs_naive']:>8.1%} "
              f"{r['epochs']:>6.1f} {r['test_accuracy']:>8.4f}±{r['accuracy_std']:.4f} {pts:>12}")
    print(f"(mean of {a.seeds} seeds, echo {a.echo}; pts against no halting at the same budget, "
          "± over seeds)")


if __name__ == "__main__":
    main()
