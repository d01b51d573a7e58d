"""`edgekd demo`: the whole job on one machine, start to finish."""

import json
import os
import signal
import subprocess
import sys

import click

from ..distill.config import CHECKPOINT
from ..errors import EdgekdError
from .base import EpochBar, backend_option, emit, json_option, main

TEACHER_SPEC = {"input_shape": [64], "num_classes": 10,
                "layers": [{"type": "dense", "units": 256, "activation": "relu"},
                           {"type": "dense", "units": 256, "activation": "relu"},
                           {"type": "dense", "units": 10}]}
TEACHER_EPOCHS = 30


def demo_text(r):
    t, s, d = r["teacher"], r["student"], r["design"]
    cached = "  (cached)" if t["cached"] else ""
    return "\n".join([
        f"teacher  {t['params']:>7,} params  test accuracy {t['test_accuracy']:.4f}{cached}",
        (f"student  {s['params']:>7,} params  test accuracy {s['test_accuracy']:.4f}  "
         f"({d['binding']}-bound design for {r['profile']}, {d['storage_bytes']:,} B of weights)"),
        (f"link     {r['link_bytes']:,} bytes instead of {s['bytes_naive_run']:,} for naive "
         f"streaming of the epochs run: {r['bytes_saved_fraction_run']:.1%} saved "
         f"({r['bytes_saved_fraction_planned']:.1%} vs all {s['epochs_planned']} planned)"),
        (f"epochs   {s['epochs_run']} run ({s['stop_reason']}), "
         f"{s['settled_fraction']:.0%} of samples settled"),
        f"host     {r['host'][0]}:{r['host'][1]} (a separate process; its log: {r['host_log']})",
        f"output   {r['out']}",
    ])


class HostProcess:
    """`edgekd serve` in a child process on a free loopback port, stopped with SIGINT."""

    def __init__(self, teacher_path, log_path, backend):
        self.teacher_path, self.log_path, self.backend = teacher_path, log_path, backend

    def __enter__(self):
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgekd", "serve", "--teacher", self.teacher_path,
             "--data", "digits", "--bind", "127.0.0.1:0", "--json", "--backend", self.backend],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        try:
            info = json.loads(line)
            self.address = (info["host"], info["port"])
        except (ValueError, KeyError):
            self.__exit__(None, None, None)
            raise EdgekdError(f"the host process did not start (see {self.log_path})") from None
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


def cached_teacher(data, cache, seed):
    """(path, was it cached, its evaluation): the demo's teacher, trained once per backend
    (numpy and numba teachers differ in round-off, and so would the run after)."""
    from ..kernels.backend import active
    from ..workflows import evaluate, spec_digest, train_teacher
    digest = spec_digest(TEACHER_SPEC, epochs=TEACHER_EPOCHS, seed=seed, backend=active().name)
    tpath = os.path.join(cache, f"teacher-digits-{digest}.npz")
    cached = os.path.exists(tpath)
    if not cached:
        os.makedirs(cache, exist_ok=True)   # edgekd's own cache folder: made on first use
        with EpochBar(TEACHER_EPOCHS, "teacher", ["loss", "test_accuracy"]) as bar:
            train_teacher(TEACHER_SPEC, data, tpath, TEACHER_EPOCHS, seed=seed, on_epoch=bar.update)
    return tpath, cached, evaluate(tpath, data)


@main.command()
@click.option("--out", type=click.Path(file_okay=False),
              help="Run directory [a fresh one in edgekd's cache dir].")
@click.option("--profile", "profile_name", default="pi-zero", show_default=True,
              help="Board whose speed and latency the student is designed for.")
@click.option("--storage", default="8KiB", show_default=True,
              help="Weight budget, small enough to deploy the student to a microcontroller later.")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=int)
@json_option
@backend_option
def demo(out, profile_name, storage, epochs, seed, as_json):
    """Teacher -> design -> KD training with early halting -> evaluation, on digits.

    The teacher (a 64-256-256-10 MLP) is trained once and cached in the user's cache dir.
    The student is designed for a Pi Zero with an 8 KiB weight budget. Then two processes
    talk over loopback TCP: a host (`edgekd serve`, its log in OUT/host.log) streams soft
    labels, and this process, as the device, distills the student with early halting. The
    summary compares it with the teacher and the link's bytes with naive streaming.
    """
    import shutil

    from ..data import load_dataset
    from ..design.designer import Constraints, design
    from ..design.profiles import get_profile
    from ..design.units import parse_bytes
    from ..distill.config import TrainConfig
    from ..kernels.backend import active
    from ..link.client import LinkSource
    from ..link.settings import LinkConfig
    from ..link.transport import dial_tcp
    from ..workflows import cache_dir, train_student

    data = load_dataset("digits")
    cache = cache_dir()
    tpath, cached, t_eval = cached_teacher(data, cache, seed)

    prof = get_profile(profile_name)
    d = design(TEACHER_SPEC, Constraints.from_profile(prof, storage_bytes=parse_bytes(storage)))

    os.makedirs(cache, exist_ok=True)
    out = out or os.path.join(cache, "demo-run")
    if os.path.exists(os.path.join(out, CHECKPOINT)):
        shutil.rmtree(out)  # the demo always starts over
    os.makedirs(out, exist_ok=True)
    cfg = TrainConfig(epochs=epochs, seed=seed)
    with HostProcess(tpath, os.path.join(out, "host.log"), active().name) as host:
        def dial():
            return dial_tcp(*host.address)
        source = LinkSource(dial, **LinkConfig().source_kwargs())
        with EpochBar(epochs, "student", ["loss", "test_accuracy", "settled_fraction"]) as bar:
            s = train_student(d.spec, source, cfg, out, on_epoch=bar.update)
    link = s["bytes_down"] + s["bytes_up"]
    res = {"profile": prof.name, "out": out,
           "teacher": {"params": t_eval["params"], "test_accuracy": t_eval["test_accuracy"],
                       "cached": cached, "path": tpath},
           "design": {k: d.to_dict()[k] for k in ("params", "flops", "storage_bytes",
                                                  "train_ram_bytes", "latency_s", "binding", "widths")},
           "student": s, "link_bytes": link, "host": host.address,
           "host_log": host.log_path,
           "bytes_saved_fraction_run": 1 - link / s["bytes_naive_run"],
           "bytes_saved_fraction_planned": 1 - link / s["bytes_naive_planned"]}
    emit(res, as_json, demo_text)
