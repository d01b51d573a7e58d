"""edgekd's training beside PyTorch's on the same recipe, on the built-in sensor set.

    python benchmarks/recipe_parity.py [--seeds 5] [--epochs 30] [--variant NAME ...] [--json]

Teacher: conv1d 32 k5 same relu -> conv1d 64 k3 stride 2 same relu -> flatten -> dense 5;
Adam lr 3e-3, cosine decay, batch 64, hard labels. edgekd trains it with its supervised
trainer (distill.supervised.fit, what `edgekd teacher` runs); PyTorch with a plain loop over
the same data (channels-last rows transposed for torch's conv1d), the same batches in the same
order (the seeded permutation edgekd draws), the same last partial batch, cross-entropy and
torch.optim.Adam with its defaults.

Student: the sensor student of benchmarks/link_bytes.py, distilled (T=4, alpha 0.9, Adam lr
0.01, batch 32) from edgekd's seed-0 teacher, by `train_student` (in-process link, float32
codecs, halting off, cache budget 0, the last epoch's weights) and by a torch KD loop on the
same teacher logits, the same training ids and the same sample order.

Variants (each one knob; `--variant` may be repeated, "base" is the recipe as it ships;
torch_init and edgekd_init apply to the student rows too):
  torch_init    edgekd layers drawn as PyTorch draws them ("init": "torch_uniform")
  cosine_step   edgekd's cosine decayed every step, not every epoch (patched in here: it did
                not help, so edgekd does not offer it)
  edgekd_init   PyTorch started from edgekd's initial weights (isolates the numerics)
  torch_step    PyTorch with the per-step cosine
"""

import argparse
import copy
import json
import math
import os
import sys
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from edgekd.data import load_dataset  # noqa: E402
from edgekd.distill import supervised  # noqa: E402
from edgekd.distill.config import TrainConfig  # noqa: E402
from edgekd.distill.halting import HaltingConfig  # noqa: E402
from edgekd.distill.optim import scheduled_lr  # noqa: E402
from edgekd.distill.steps import accuracy  # noqa: E402
from edgekd.link.local import LocalSource  # noqa: E402
from edgekd.link.settings import LinkConfig  # noqa: E402
from edgekd.nn.io import save_model  # noqa: E402
from edgekd.nn.model import Sequential  # noqa: E402
from edgekd.order import epoch_order, split_validation  # noqa: E402
from edgekd.teachers import load_teacher  # noqa: E402
from edgekd.workflows import train_student  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from link_bytes import SETS  # noqa: E402

TEACHER = {"input_shape": [64, 3], "num_classes": 5, "layers": [
    {"type": "conv1d", "filters": 32, "kernel_size": 5, "padding": "same", "activation": "relu"},
    {"type": "conv1d", "filters": 64, "kernel_size": 3, "stride": 2, "padding": "same",
     "activation": "relu"},
    {"type": "flatten"}, {"type": "dense", "units": 5}]}
STUDENT = SETS["sensor"]["student"]
T_BATCH, T_LR = 64, 3e-3
S_BATCH, S_LR, TEMP, ALPHA = 32, 0.01, 4.0, 0.9
VARIANTS = ("base", "torch_init", "cosine_step", "edgekd_init", "torch_step")


def with_init(spec, init):
    """The spec with every weighted layer's "init" set (None: the spec as it is)."""
    if init is None:
        return spec
    spec = copy.deepcopy(spec)
    for layer in spec["layers"]:
        if layer["type"] in ("dense", "conv1d", "conv2d"):
            layer["init"] = init
    return spec


# ------------------------------------------------------------------------------- edgekd
def edgekd_teacher(data, seed, epochs, variant):
    spec = with_init(TEACHER, "torch_uniform" if variant == "torch_init" else None)
    model = Sequential(spec, seed=seed)
    real = supervised.kd_step
    if variant == "cosine_step":
        supervised.kd_step = per_step_cosine(real, epochs * math.ceil(len(data.y_train) / T_BATCH))
    try:
        supervised.fit(model, data, epochs=epochs, batch=T_BATCH, lr=T_LR, seed=seed)
    finally:
        supervised.kd_step = real
    return accuracy(model, data.x_test, data.y_test), model


def per_step_cosine(step_fn, total):
    """kd_step that first overrides fit's per-epoch rate with the cosine at this step."""
    count = [0]

    def step(model, opt, *args):
        opt.lr = np.float32(T_LR * 0.5 * (1 + math.cos(math.pi * count[0] / total)))
        count[0] += 1
        return step_fn(model, opt, *args)
    return step


def edgekd_student(data, teacher_path, seed, epochs, workdir, variant):
    cfg = TrainConfig(epochs=epochs, batch=S_BATCH, lr=S_LR, seed=seed, temperature=TEMP,
                      alpha=ALPHA, halting=HaltingConfig(enabled=False), cache_budget=0,
                      restore_best=False, echo=1)   # one step per batch, as the torch loop
    src = LocalSource(load_teacher(teacher_path), data, **LinkConfig.choose("f32").source_kwargs())
    spec = with_init(STUDENT, "torch_uniform" if variant == "torch_init" else None)
    return train_student(spec, src, cfg, tempfile.mkdtemp(dir=workdir))["test_accuracy"]


# ------------------------------------------------------------------------------- torch
def same_pad(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class TorchNet(torch.nn.Module):
    """A channels-last edgekd spec of conv1d / flatten / global_avgpool / dense, in torch."""

    def __init__(self, spec):
        super().__init__()
        self.steps, mods = [], []
        length, ch = spec["input_shape"]
        flat = None
        for layer in spec["layers"]:
            t = layer["type"]
            if t == "conv1d":
                k, s = layer["kernel_size"], layer.get("stride", 1)
                pad = same_pad(length, k, s) if layer.get("padding") == "same" else (0, 0)
                mods.append(torch.nn.Conv1d(ch, layer["filters"], k, stride=s))
                self.steps.append(("conv", len(mods) - 1, pad, layer.get("activation")))
                length = (length + sum(pad) - k) // s + 1
                ch = layer["filters"]
            elif t == "flatten":
                self.steps.append(("flatten",))
                flat = length * ch
            elif t == "global_avgpool":
                self.steps.append(("gap",))
                flat = ch
            elif t == "dense":
                mods.append(torch.nn.Linear(flat, layer["units"]))
                self.steps.append(("dense", len(mods) - 1, None, layer.get("activation")))
        self.mods = torch.nn.ModuleList(mods)

    def forward(self, x):                    # x: [n, length, channels] as edgekd holds it
        h = x.transpose(1, 2)                # torch's conv1d wants [n, channels, length]
        for step in self.steps:
            if step[0] == "conv":
                h = self.mods[step[1]](F.pad(h, step[2]))
            elif step[0] == "flatten":
                h = h.transpose(1, 2).flatten(1)    # channels-last order, as edgekd flattens
            elif step[0] == "gap":
                h = h.mean(dim=2)
            else:
                h = self.mods[step[1]](h)
            if len(step) > 3 and step[3] == "relu":
                h = torch.relu(h)
        return h

    def load_edgekd(self, model):
        """Copy an edgekd model's weights: conv kernels [k, cin, f] -> [f, cin, k],
        dense kernels [in, out] -> [out, in]."""
        weighted = [layer for layer in model.layers if layer.type in ("conv1d", "dense")]
        with torch.no_grad():
            for mod, layer in zip(self.mods, weighted):
                k = layer.params["kernel"]
                w = k.transpose(2, 1, 0) if layer.type == "conv1d" else k.T
                mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                mod.bias.copy_(torch.from_numpy(layer.params["bias"].copy()))


def torch_fit(net, x, order_of, epochs, batch, lr, loss_fn, per_step=False):
    """Adam with torch's defaults; lr by edgekd's per-epoch cosine (or per step)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(order_of(0)) / batch)
    step = 0
    for epoch in range(epochs):
        order = order_of(epoch)
        for i in range(0, len(order), batch):
            if per_step:
                frac = step / (epochs * steps_per_epoch)
                opt.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * frac))
            else:
                opt.param_groups[0]["lr"] = scheduled_lr(lr, "cosine", epoch, epochs)
            ids = torch.from_numpy(order[i:i + batch])
            opt.zero_grad()
            loss_fn(net(x[ids]), ids).backward()
            opt.step()
            step += 1
    return net


def torch_accuracy(net, data):
    with torch.no_grad():
        out = net(torch.from_numpy(data.x_test))
    return float((out.argmax(1).numpy() == data.y_test).mean())


def torch_teacher(data, seed, epochs, variant):
    torch.manual_seed(seed)
    net = TorchNet(TEACHER)
    if variant == "edgekd_init":
        net.load_edgekd(Sequential(TEACHER, seed=seed))
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train.astype(np.int64))
    n = len(data.y_train)
    torch_fit(net, x, lambda e: np.random.default_rng([seed, e]).permutation(n), epochs,
              T_BATCH, T_LR, lambda out, ids: F.cross_entropy(out, y[ids]),
              per_step=variant == "torch_step")
    return torch_accuracy(net, data)


def torch_student(data, teacher_logits, seed, epochs, variant):
    torch.manual_seed(seed)
    net = TorchNet(STUDENT)
    if variant == "edgekd_init":
        net.load_edgekd(Sequential(STUDENT, seed=seed))
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train.astype(np.int64))
    soft = torch.from_numpy(teacher_logits)
    train_ids, _ = split_validation(len(y), TrainConfig().val_fraction, seed)
    keep = np.zeros(len(y), bool)

    def kd(out, ids):
        kl = F.kl_div(F.log_softmax(out / TEMP, 1), F.log_softmax(soft[ids] / TEMP, 1),
                      reduction="batchmean", log_target=True)
        return ALPHA * TEMP ** 2 * kl + (1 - ALPHA) * F.cross_entropy(out, y[ids])
    torch_fit(net, x, lambda e: epoch_order(train_ids, seed, e, keep), epochs, S_BATCH,
              S_LR, kd)
    return torch_accuracy(net, data)


# ------------------------------------------------------------------------------- report
def stats(vals):
    a = np.array(vals)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "per_seed": [round(float(v), 4) for v in vals]}


def run(a):
    data = load_dataset("sensor")
    rows = []
    seeds = list(range(a.seeds))
    workdir = tempfile.mkdtemp(prefix="recipe-")
    for variant in a.variant:
        ek, tt = [], []
        for seed in seeds:
            if variant in ("base", "torch_init", "cosine_step"):
                acc, model = edgekd_teacher(data, seed, a.epochs, variant)
                ek.append(acc)
                if variant == "base" and seed == 0:
                    teacher_model = model
            if variant in ("base", "edgekd_init", "torch_step"):
                tt.append(torch_teacher(data, seed, a.epochs, variant))
            print(f"  teacher {variant} seed {seed}: edgekd {ek[-1:]} torch {tt[-1:]}",
                  file=sys.stderr, flush=True)
        rows.append({"model": "teacher", "variant": variant,
                     "edgekd": stats(ek) if ek else None, "torch": stats(tt) if tt else None})
    if a.student:
        if "teacher_model" not in locals():
            _, teacher_model = edgekd_teacher(data, 0, a.epochs, "base")
        path = os.path.join(workdir, "teacher.npz")
        save_model(path, teacher_model)
        logits = teacher_model.predict(data.x_train)
        for variant in [v for v in ("base", "torch_init", "edgekd_init") if v in a.variant]:
            ek = [edgekd_student(data, path, s, a.epochs, workdir, variant) for s in seeds
                  ] if variant != "edgekd_init" else None
            tt = [torch_student(data, logits, s, a.epochs, variant) for s in seeds
                  ] if variant != "torch_init" else None
            rows.append({"model": "student (KD)", "variant": variant,
                         "edgekd": ek and stats(ek), "torch": tt and stats(tt)})
    return rows


def cell(s):
    if s is None:
        return "—"
    return f"{s['mean']:.3f} ± {s['std']:.3f} ({' '.join(f'{v:.3f}' for v in s['per_seed'])})"


def table(rows, seeds, epochs):
    out = [f"sensor set, {seeds} seeds, {epochs} epochs; test accuracy mean ± std (per seed)",
           "| model | variant | edgekd | PyTorch 2 |", "|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['variant']} | {cell(r['edgekd'])} | {cell(r['torch'])} |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--variant", action="append", choices=VARIANTS,
                   help="repeatable; default: base")
    p.add_argument("--no-student", dest="student", action="store_false")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    a.variant = a.variant or ["base"]
    torch.set_num_threads(1)
    rows = run(a)
    if a.json:
        print(json.dumps({"seeds": a.seeds, "epochs": a.epochs, "torch": torch.__version__,
                          "rows": rows}, indent=1))
    else:
        print(table(rows, a.seeds, a.epochs))


if __name__ == "__main__":
    main()
