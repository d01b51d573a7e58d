"""The work behind `edgekd teacher`, `train` and `eval`, as plain functions returning
JSON-ready dicts.

The CLI only parses flags, shows progress and prints; these functions hold the work, so tests
and other front ends call them directly. Export's work is in edgekd.export; board RPCs are
the board bridge's own.
"""

import hashlib
import json
import os
import time

import numpy as np

from .errors import EdgekdError


def check_student(spec, data=None, teacher=None, where="student spec"):
    """Up-front checks of a student against the data it will read and the teacher it will
    imitate (the KD loss needs logits of the same width), before anything is built."""
    if data is not None:
        data.check_model(spec["input_shape"], spec["num_classes"], where)
    if teacher is not None:
        if tuple(teacher.input_shape) != tuple(spec["input_shape"]):
            raise EdgekdError(f"{where}: takes inputs of shape {list(spec['input_shape'])}, "
                              f"the teacher {teacher.path} {list(teacher.input_shape)}")
        if teacher.num_classes != spec["num_classes"]:
            raise EdgekdError(f"{where}: has {spec['num_classes']} classes, the teacher "
                              f"{teacher.path} {teacher.num_classes}; distillation needs the same")


def train_teacher(spec, data, out, epochs=None, batch=None, lr=None, optimizer=None, seed=0,
                  on_epoch=None):
    """Hard-label training of a teacher; None takes distill.supervised's defaults."""
    from .distill import supervised
    from .distill.supervised import fit
    epochs = supervised.EPOCHS if epochs is None else epochs
    batch = supervised.BATCH if batch is None else batch
    lr = supervised.LR if lr is None else lr
    optimizer = optimizer or supervised.OPTIMIZER
    from .nn.io import save_model
    from .nn.model import Sequential
    model = Sequential(spec, seed=seed)
    data.check_model(model.input_shape, model.num_classes, "teacher spec")
    t0 = time.perf_counter()
    history = fit(model, data, epochs=epochs, batch=batch, lr=lr, optimizer=optimizer,
                  seed=seed, on_epoch=on_epoch)
    acc = history[-1]["test_accuracy"]
    meta = {"kind": "teacher", "data": data.name, "test_accuracy": acc, "epochs": epochs,
            "seed": seed}
    save_model(out, model, meta=meta)
    return {"test_accuracy": acc, "params": model.num_params(), "epochs": epochs,
            "output": os.fspath(out), "wall_s": round(time.perf_counter() - t0, 3)}


def train_student(spec, source, cfg, out, resume=None, on_epoch=None):
    """KD training of `spec` from the soft-label `source`; writes student, metrics,
    checkpoint. `resume` is None (or False) for a fresh run, or the run's Checkpoint
    (distill.checkpoint.load_checkpoint(out)):
    its settings win over `cfg`, and `source` should have been made with its link settings."""
    from .distill.config import CHECKPOINT, METRICS, STUDENT
    from .distill.trainer import Trainer
    from .nn.model import Sequential
    if resume is True:
        raise TypeError("resume takes the run's Checkpoint (distill.checkpoint.load_checkpoint)")
    resume = resume or None   # False: a fresh run
    cfg = resume.cfg if resume is not None else cfg
    model = Sequential(spec, seed=cfg.seed, where="student spec")
    if resume is None and os.path.exists(os.path.join(out, CHECKPOINT)):
        raise EdgekdError(f"{out}: holds a run already; pass --resume to continue it "
                          f"or choose another --out")
    trainer = Trainer(model, source, cfg, out, on_epoch=on_epoch, resumed=resume)
    if resume is None and os.path.exists(os.path.join(out, METRICS)):
        os.unlink(os.path.join(out, METRICS))
    summary = trainer.run()
    summary["output"] = os.path.join(out, STUDENT)
    return summary


def evaluate(model_path, data, latency_samples=200):
    """Test accuracy (same batched inference as training's) and single-sample latency of an
    edgekd .npz, or of a .tflite run in the TFLM interpreter."""
    ext = os.path.splitext(os.fspath(model_path))[1].lower()
    if ext == ".tflite":
        return _evaluate_tflite(model_path, data, latency_samples)
    if ext != ".npz":
        raise EdgekdError(f"{model_path}: expected an edgekd model .npz or a .tflite model "
                          f"(from `edgekd export`), not a {ext or 'file without extension'}")
    from .distill.steps import accuracy
    from .nn.io import load_model
    model, _, _ = load_model(model_path)
    data.check_model(model.input_shape, model.num_classes, os.fspath(model_path))
    acc = accuracy(model, data.x_test, data.y_test)
    latency = _median_latency(lambda x: model.forward(x), data.x_test, latency_samples)
    return {"test_accuracy": acc, "latency_s": latency,
            "params": model.num_params(), "samples": len(data.y_test),
            "weights_sha256": model.weights_sha256()}


def _median_latency(run_one, x, samples):
    xs = x[:max(1, min(samples, len(x)))]
    times = []
    for i in range(len(xs)):
        t0 = time.perf_counter()
        run_one(xs[i:i + 1])
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _evaluate_tflite(model_path, data, latency_samples):
    """Inputs quantized as the model's input tensor says (int8 models), outputs compared by
    argmax (which quantization keeps), in the real TFLM interpreter."""
    from .export.tflm import Runner
    try:
        with open(model_path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise EdgekdError(f"{model_path}: cannot read: {e.strerror or e}") from None
    run = Runner(blob, where=os.fspath(model_path))
    data.check_model(run.input_shape, run.num_classes, os.fspath(model_path))
    y = run(data.x_test)
    acc = float((np.argmax(y, axis=1) == data.y_test).mean())
    return {"test_accuracy": acc, "latency_s": _median_latency(run, data.x_test, latency_samples),
            "samples": len(data.y_test), "model_bytes": len(blob), "int8": run.int8,
            "outputs_sha256": hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()}


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgekd")


def spec_digest(spec, **extra):
    blob = json.dumps({"spec": spec, **extra}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
