"""The board table of the README: one digits int8 student (MLP 64-32-10, 15 epochs) and a
64-256-256-10 teacher, on every kind of board: the emulator (TFLM), the C firmware built for
this host, and the same firmware on a Cortex-M4F and a Cortex-M3 in QEMU. For each: the
firmware image's sizes, test accuracy on the board against TFLM's (and whether the outputs
are bit for bit TFLM's), and `train-last` with its defaults (held-out accuracy before and of
the layer kept, KD loss, link bytes against naive streaming) and, where the board can
count, instructions per int8 inference (`board bench`, QEMU under -icount).

The second table trains the whole float32 student (MLP 64-32-10) on each board with
`edgekd board train` and its defaults (KD T=4, alpha 0.9, Adam, batch 32, halting on), next
to `edgekd train --echo 1` (a board takes one step per batch) of the same spec, teacher and
seed on this host: test accuracy on the board,
link bytes against naive float32 streaming, epochs, settled fraction, the training arena the
planner predicts against what the board allocated, and instructions per training sample
(`board bench --train-student`: SGD and Adam, batch 1 and 32; AIfES on the same QEMU: SGD
batch 32 60,729, Adam batch 32 128,620). A conv1d sensor student is not trained on the board
(dense layers only): its row gives instructions per int8 inference.

    python benchmarks/boards.py [--kinds emulator,host-c,qemu-m4f,qemu-m3] [--tables last,train] [--json]

Every step runs the `edgekd board` command line, as a user would.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from boardutil import QEMU_MACHINES, Boards, digits_mlp, missing, ok  # noqa: E402

from edgekd.data import load_dataset  # noqa: E402
from edgekd.distill.supervised import fit  # noqa: E402
from edgekd.export import export_tflite  # noqa: E402
from edgekd.export.int8_ref import Int8Model  # noqa: E402
from edgekd.export.tflm import run_tflm  # noqa: E402
from edgekd.nn.io import save_model  # noqa: E402
from edgekd.nn.model import Sequential  # noqa: E402

EDGEKD = [sys.executable, "-m", "edgekd"]


def models(d):
    ds = load_dataset("digits")
    student = Sequential(digits_mlp(32), seed=0)
    fit(student, ds, epochs=15, batch=32, lr=3e-3)
    teacher = Sequential(digits_mlp(256, 256), seed=1)
    fit(teacher, ds, epochs=15, batch=32, lr=3e-3)
    save_model(os.path.join(d, "teacher.npz"), teacher)
    path = os.path.join(d, "student.tflite")
    export_tflite(student, path, int8=True, calib_x=ds.x_train[:256])
    data = open(path, "rb").read()
    ref = Int8Model.from_tflite(data)
    y = run_tflm(data, ref.quantize_input(ds.x_test))
    return ds, path, os.path.join(d, "teacher.npz"), y


def image_sizes(kind, out):
    if kind not in QEMU_MACHINES:
        return None
    r = subprocess.run(EDGEKD + ["board", "firmware", "--target", QEMU_MACHINES[kind], "-o",
                                 out, "--json"], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)


def one_board(kind, boards, student, teacher, tflm_y, ds, out):
    sizes = image_sizes(kind, out)
    with boards.start(kind) as board:
        p = board.port
        dep = ok(p, "deploy", student)
        inf = ok(p, "infer", "--data", "digits", timeout=600)
        tr = ok(p, "train-last", "--teacher", teacher, "--data", "digits", timeout=3600)
        after = ok(p, "infer", "--data", "digits", timeout=600)
        ok(p, "reset")
        bench = ok(p, "bench", "--data", "digits", "-n", "20")
    tflm_sha = hashlib.sha256(tflm_y.astype(np.int8).tobytes()).hexdigest()
    return {"kind": kind, "sizes": sizes, "model_bytes": dep["model_bytes"],
            "accuracy": inf["test_accuracy"],
            "tflm_accuracy": float(np.mean(tflm_y.argmax(axis=1) == ds.y_test)),
            "bit_exact": inf["outputs_sha256"] == tflm_sha, "train_last": tr,
            "accuracy_after": after["test_accuracy"],
            "instructions_per_inference": bench["instructions_per_inference"]}


def reference_train(spec_path, teacher, out):
    r = subprocess.run(EDGEKD + ["train", "--student", spec_path, "--teacher", teacher, "--data",
                                 "digits", "--echo", "1", "--out", out, "--json"], check=True,
                       capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def conv1d_student(d):
    ds = load_dataset("sensor")
    spec = {"input_shape": [64, 3], "num_classes": 5, "layers": [
        {"type": "conv1d", "filters": 8, "kernel_size": 5, "stride": 2, "padding": "same",
         "activation": "relu"}, {"type": "maxpool1d", "pool_size": 2},
        {"type": "conv1d", "filters": 8, "kernel_size": 3, "activation": "relu"},
        {"type": "global_avgpool"}, {"type": "dense", "units": 5}]}
    model = Sequential(spec, seed=0)
    fit(model, ds, epochs=4, batch=32, lr=3e-3)
    path = os.path.join(d, "conv1d.tflite")
    export_tflite(model, path, int8=True, calib_x=ds.x_train[:256])
    return path


def train_board(kind, boards, spec_path, teacher, conv_path):
    with boards.start(kind) as board:
        p = board.port
        tr = ok(p, "train", "--student", spec_path, "--teacher", teacher, "--data", "digits",
                timeout=7200)
        cost = ok(p, "bench", "--data", "digits", "--train-student", spec_path, timeout=600)
        ok(p, "deploy", conv_path)
        conv = ok(p, "bench", "--data", "sensor", "-n", "5", timeout=600)
    return {"kind": kind, "train": tr, "training_cost": cost.get("training"),
            "conv1d_instructions_per_inference": conv["instructions_per_inference"]}


def print_train_table(rows, ref):
    print(f"\nwhole student (64-32-10) trained on the board by `edgekd board train`; "
          f"`edgekd train --echo 1` (one step per batch, as on the board) on this host: "
          f"test accuracy {ref['test_accuracy']:.4f}, "
          f"{ref['epochs_run']} epochs")
    print(f"{'board':10} {'test acc':>8} {'link bytes (naive)':>24} {'of naive':>8} "
          f"{'epochs':>6} {'settled':>7} {'arena pred / board':>19} "
          f"{'instr/sample SGD b1 / b32':>26} {'Adam b1 / b32':>18} {'conv1d instr/inf':>16}")
    for r in rows:
        t = r["train"]
        mem = t["memory"]
        c = {(x["optimizer"], x["batch"]): x["instructions_per_sample"]
             for x in r["training_cost"] or []}

        def n(v):
            return "-" if v is None else format(v, ",.0f")
        conv = r["conv1d_instructions_per_inference"]
        print(f"{r['kind']:10} {t['test_accuracy']:>8.4f} "
              f"{t['bytes_down'] + t['bytes_up']:>11,} ({t['bytes_naive']:>10,}) "
              f"{t['link_fraction_of_naive']:>8.1%} {t['epochs_run']:>6} "
              f"{t['settled_fraction']:>7.1%} "
              f"{mem['predicted']['arena']:>9,} / {mem['board']['arena']:<7,} "
              f"{n(c.get(('sgd', 1))):>12} / {n(c.get(('sgd', 32))):<11} "
              f"{n(c.get(('adam', 1))):>8} / {n(c.get(('adam', 32))):<7} {n(conv):>16}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default="emulator,host-c,qemu-m4f,qemu-m3")
    ap.add_argument("--tables", default="last,train",
                    help="last: deploy/infer/train-last; train: the whole student")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tables = a.tables.split(",")
    rows, train_rows, ref = [], [], None
    with tempfile.TemporaryDirectory() as d:
        ds, student, teacher, tflm_y = models(d)
        boards = Boards(d)
        kinds = []
        for kind in a.kinds.split(","):
            why = missing(kind)
            if why:
                print(f"{kind}: skipped ({why})", file=sys.stderr)
                continue
            kinds.append(kind)
        if "last" in tables:
            rows = [one_board(kind, boards, student, teacher, tflm_y, ds, d) for kind in kinds]
        if "train" in tables:
            spec_path = os.path.join(d, "mlp.json")
            with open(spec_path, "w") as f:
                json.dump(digits_mlp(32), f)
            ref = reference_train(spec_path, teacher, os.path.join(d, "ref"))
            conv = conv1d_student(d)
            train_rows = [train_board(kind, boards, spec_path, teacher, conv) for kind in kinds]
    if a.json:
        print(json.dumps({"last_layer": rows, "whole_student": train_rows,
                          "edgekd_train": ref}, indent=1))
        return
    if rows:
        print_last_table(rows)
    if train_rows:
        print_train_table(train_rows, ref)


def print_last_table(rows):
    print(f"{'board':10} {'image text / bss':>17} {'accuracy (TFLM)':>16} {'bit-exact':>9} "
          f"{'held-out acc before -> kept':>28} {'KD loss before -> after':>24} "
          f"{'link bytes (naive)':>21} {'test acc after':>14} {'instr/inference':>15}")
    for r in rows:
        s = r["sizes"]
        img = f"{s['text']:,} / {s['bss']:,}" if s else "-"
        t, h = r["train_last"], r["train_last"]["holdout"]
        print(f"{r['kind']:10} {img:>17} {r['accuracy']:.4f} ({r['tflm_accuracy']:.4f}) "
              f"{'yes' if r['bit_exact'] else 'NO':>9} "
              f"{h['accuracy_before']:.4f} -> {h['accuracy_after']:.4f} ({t['kept']:>7}) "
              f"{t['loss_before']:>11.3f} -> {t['loss_after']:<9.3f} "
              f"{t['bytes_down'] + t['bytes_up']:>10,} ({t['bytes_naive_run']:,}) "
              f"{r['accuracy_after']:>10.4f} "
              f"{'-' if r['instructions_per_inference'] is None else format(r['instructions_per_inference'], ',.0f'):>15}")


if __name__ == "__main__":
    main()
