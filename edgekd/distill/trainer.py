"""The device's KD trainer: reads batches from a soft-label source, halts early, checkpoints.

Every epoch ends with a checkpoint (atomic) and a metrics line; a Trainer given the run's
last checkpoint (`resumed`) continues from it and, because batches, dropout masks and halting are all seeded, ends with the
weights an uninterrupted run would have had.
"""

import json
import os
import resource
import time

import numpy as np

from ..errors import EdgekdError
from ..fileio import append_line, atomic_path, drop_torn_tail
from ..nn.io import save_model
from ..order import epoch_order, split_validation
from ..source import Hello
from .best import BestWeights
from .device_cache import DeviceCache
from .feed import EpochFeed
from .halting import EpochHalter, SettleTracker
from .optim import make_optimizer
from .losses import teacher_information
from .steps import accuracy, kd_step, slice_metrics
from .config import CHECKPOINT, METRICS, STUDENT


def peak_rss_mib():
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec; ru_maxrss
    would carry over the high-water mark of the process that forked us."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Trainer:
    """`resumed` (a Checkpoint of this run, from load_checkpoint) continues that run: its
    training settings replace `cfg`, and its state is loaded into what is built here."""

    def __init__(self, model, source, cfg, out_dir, on_epoch=None, resumed=None):
        self.model, self.source = model, source
        self.cfg = (resumed.cfg if resumed is not None else cfg).check()
        self.out = out_dir
        self.on_epoch = on_epoch or (lambda metrics: None)
        self.opt = make_optimizer(self.cfg.optimizer, model.trainables(), self.cfg.lr,
                                  self.cfg.weight_decay, self.cfg.momentum)
        self.halter = EpochHalter(self.cfg.halting, f"validation {self.cfg.val_metric}",
                                  lower_is_better=self.cfg.val_metric == "kl")
        self.best = BestWeights(self.cfg.restore_best)
        self.epoch = 0              # epochs completed
        self.stop_reason = None
        self.base = {"bytes_down": 0, "bytes_up": 0, "bytes_eval": 0, "train_s": 0.0,
                     "wall_s": 0.0, "samples": 0}
        self.resumed = resumed
        if resumed is not None:
            self._restore(resumed)

    # ---------------------------------------------------------------- set-up and resume
    def path(self, name):
        return os.path.join(self.out, name)

    def _restore(self, ck):
        """Load the checkpoint's state into the model, optimizer, halter and best tracker."""
        if ck.spec != self.model.spec:
            raise EdgekdError(f"{ck.path}: the checkpoint was trained with a different student spec")
        self.model.load_state(ck.arrays, where=ck.path)
        self.opt.load_state(ck.arrays)
        self.halter.load_state(ck.halter)
        self.best.load(ck.best, ck.arrays)
        self.model.dropout_rng.bit_generator.state = ck.dropout_rng
        self.epoch, self.stop_reason, self.base = ck.epoch, ck.stop, dict(ck.totals)
        self._truncate_metrics()

    def _truncate_metrics(self):
        """Drop metric lines of epochs after the checkpoint (written before a crash)."""
        path = self.path(METRICS)
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            lines = drop_torn_tail(f.read().splitlines())
        keep = [line + "\n" for line in lines
                if line.strip() and json.loads(line)["epoch"] <= self.epoch]
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.writelines(keep)

    def connect(self):
        """Handshake (telling the host the halted set on resume) and fetch the eval slices."""
        m, cfg, ck = self.model, self.cfg, self.resumed
        hello = Hello(cfg.seed, cfg.batch, cfg.val_fraction, m.input_shape, m.num_classes)
        if ck is not None:
            hello.halted, hello.num_train = ck.halted_ids, ck.num_train
        w = self.welcome = self.source.open(hello)
        self.num_train_only = w.num_train - w.num_val
        self.train_ids = split_validation(w.num_train, cfg.val_fraction, cfg.seed)[0]
        self.tracker = SettleTracker(w.num_train, cfg.halting, self.num_train_only)
        self.cache = DeviceCache(w.num_train, self.source.row_codec(), cfg.cache_budget)
        if ck is not None:
            self.tracker.load_state(ck.arrays)
            self.cache.load_state(ck.arrays)
        self.val = self.source.validation() if w.num_val else None
        self.testset = self.source.test()

    # ------------------------------------------------------------------------- running
    def totals(self):
        s = self.source
        return {"bytes_down": self.base["bytes_down"] + s.bytes_down,
                "bytes_up": self.base["bytes_up"] + s.bytes_up,
                "bytes_eval": self.base["bytes_eval"] + s.bytes_eval,
                "bytes_wire": self.base.get("bytes_wire", 0) + s.bytes_wire}

    def run(self):
        start = time.perf_counter()
        self.connect()
        os.makedirs(self.out, exist_ok=True)   # the run's own folder, once the host answered
        self.train_s = 0.0
        self.samples = 0
        while self.stop_reason is None and self.epoch < self.cfg.epochs:
            metrics = self.run_epoch(start)
            self.epoch += 1
            self.stop_reason = metrics["stop"]
            if self.stop_reason is None and self.epoch >= self.cfg.epochs:
                self.stop_reason = f"epochs: ran all {self.cfg.epochs} epochs"
            metrics["stop"] = self.stop_reason
            self.checkpoint(start)
            append_line(self.path(METRICS), metrics)
            self.on_epoch(metrics)
        reason = self.stop_reason or f"epochs: ran all {self.cfg.epochs} epochs"
        self.source.stop(reason)
        self.source.close()
        return self.finish(start, reason)

    def plan(self):
        """This epoch's samples: every one not settled, settled ones the device holds (in its
        cache, or in a source that serves from memory) with probability rehearse_prob
        (policies rehearse and wake), and as probes settled ones it does not hold with
        probability probe_prob (`self.probing`; the host is asked for them back), in the
        epoch order."""
        cfg, h = self.cfg, self.cfg.halting
        settled = self.tracker.settled
        planned = ~settled
        held = self.cache.kept
        local = self.source.holds()
        if local is not None:
            held = held | local
        if h.policy != "skip":
            draw = np.random.default_rng([cfg.seed, self.epoch, 2]).random(len(settled))
            planned |= settled & held & (draw < h.rehearse_prob)
        self.probing = np.zeros(len(settled), bool)
        if h.probe_prob:
            draw = np.random.default_rng([cfg.seed, self.epoch, 3]).random(len(settled))
            self.probing = settled & ~held & (draw < h.probe_prob)
            planned |= self.probing
        return epoch_order(self.train_ids, cfg.seed, self.epoch, ~planned)

    def arrived(self, b):
        """A host batch came in: under keep=first, keep what the budget holds (the host is
        told they are halted, so it never sends them again)."""
        if self.cfg.halting.keep != "first" or b.rows is None:
            return b.ids[:0]
        return self.cache.admit(b.ids, b.rows, b.y)

    def run_epoch(self, start):
        cfg = self.cfg
        t_epoch = time.perf_counter()
        n = {"loss": 0.0, "correct": 0, "visited": 0, "rehearsed": 0, "probed": 0, "woken": 0,
             "settled": 0}
        stop = None
        self.opt.lr = np.float32(cfg.lr_at(self.epoch))
        plan = self.plan()
        probes = np.flatnonzero(self.probing)
        if len(probes):   # WAKE them before the epoch starts, so the host streams them
            self.source.report(self.epoch, 0, probes[:0], probes)
        feed = EpochFeed(self.source, self.epoch, plan, self.cache.kept, self.cache,
                         cfg.batch, self.arrived)
        for ids, x, soft, y, rows in feed.steps():
            res = self.step(x, soft, y)
            feed.halted(self.observe(ids, res, soft, rows, y, n))
            link = self.totals()
            stop = self.halter.budget(link["bytes_down"] + link["bytes_up"],
                                      self.base["wall_s"] + time.perf_counter() - start)
            if stop:
                break
        feed.close(finished=stop is None)
        return self.epoch_metrics(n, t_epoch, stop)

    def observe(self, ids, res, soft, rows, y, n):
        """Settle, rehearse, probe and keep after one step; returns the ids the host must now
        halt (probes that still meet the rule among them: the host streamed them again)."""
        was = self.tracker.settled[ids]
        probe = self.probing[ids]
        halted_before = (was & ~probe) | self.cache.kept[ids]
        fresh = ~was
        info = (teacher_information(soft, self.cfg.temperature)
                if self.cfg.halting.threshold == "relative" else np.ones(len(ids), np.float32))
        new = self.tracker.observe(ids[fresh], res.kl[fresh], res.agree[fresh], self.epoch,
                                   info[fresh])
        replay = was & ~probe
        n["woken"] += len(self.tracker.rehearse(ids[replay], res.kl[replay], info[replay]))
        if probe.any():
            n["woken"] += len(self.tracker.probe(ids[probe], res.kl[probe], res.agree[probe],
                                                 info[probe]))
            self.probing[ids[probe]] = False
            n["probed"] += int(probe.sum())
        if self.cfg.halting.keep == "settled" and len(new) and rows is not None:
            pos = np.flatnonzero(np.isin(ids, new) & ~self.cache.kept[ids])
            self.cache.admit(ids[pos], rows[pos], y[pos])
        n["loss"] += res.loss * len(ids)
        n["correct"] += res.correct
        n["visited"] += len(ids)
        n["rehearsed"] += int(replay.sum())
        n["settled"] += len(new)
        now = self.tracker.settled[ids] | self.cache.kept[ids]
        return ids[now & ~halted_before]

    def epoch_metrics(self, n, t_epoch, stop):
        cfg = self.cfg
        settled_frac = self.settled_fraction()
        val = slice_metrics(self.model, self.val, cfg.temperature) if self.val else {}
        signal = val.get(cfg.val_metric)
        self.best.offer(None if signal is None else self.halter.sign * signal, self.epoch + 1,
                        self.model)
        test_acc = self.test_accuracy()
        if stop is None:
            stop = self.halter.after_epoch(settled_frac, signal)
        link = self.totals()
        visited = max(n["visited"], 1)
        return {"epoch": self.epoch + 1, "loss": n["loss"] / visited,
                "train_accuracy": n["correct"] / visited, "val_accuracy": val.get("accuracy"),
                "val_agreement": val.get("agreement"), "val_kl": val.get("kl"),
                "test_accuracy": test_acc,
                "visited": n["visited"], "rehearsed": n["rehearsed"], "probed": n["probed"],
                "woken": n["woken"],
                "newly_settled": n["settled"], "settled": int(self.tracker.settled.sum()),
                "settled_fraction": settled_frac, "kept": self.cache.used,
                "kept_bytes": self.cache.nbytes, **link,
                "bytes_naive_run": self.naive(self.epoch + 1),
                "bytes_naive_planned": self.naive(cfg.epochs),
                "epoch_s": time.perf_counter() - t_epoch, "stop": stop}

    def naive(self, epochs):
        """What streaming every training sample as float32 for `epochs` epochs would cost."""
        return self.source.naive_bytes(epochs, self.num_train_only, self.cfg.batch)

    def test_accuracy(self):
        """None when the host keeps its test split (serve --no-test-split)."""
        t = self.testset
        return accuracy(self.model, t.x, t.y) if len(t.y) else None

    def settled_fraction(self):
        return float(self.tracker.settled.sum()) / max(self.num_train_only, 1)

    def step(self, x, soft, y):
        """`echo` KD steps in a row on the batch (data echoing: on a streaming run the link,
        not the device, is what is scarce, so a row that cost bytes should buy more than one
        step). Every batch is echoed alike, streamed or kept, so what the device keeps still
        changes the bytes and not the weights. The first step's KL and agreement, taken
        before the batch moved the weights, are what halting sees."""
        t0 = time.perf_counter()
        cfg = self.cfg
        res = kd_step(self.model, self.opt, x, soft, y, cfg.temperature, cfg.effective_alpha)
        for _ in range(cfg.echo - 1):
            kd_step(self.model, self.opt, x, soft, y, cfg.temperature, cfg.effective_alpha)
        self.samples += cfg.echo * len(y)
        self.train_s += time.perf_counter() - t0
        return res

    # ------------------------------------------------------------------ checkpoint, end
    def checkpoint(self, start):
        totals = {**self.totals(), "train_s": self.base["train_s"] + self.train_s,
                  "wall_s": self.base["wall_s"] + time.perf_counter() - start,
                  "samples": self.base["samples"] + self.samples}
        state = {"epoch": self.epoch, "stop": self.stop_reason, "config": self.cfg.to_dict(),
                 "link": self.source.settings(),
                 "halter": self.halter.state(), "best": self.best.meta(), "totals": totals,
                 "dropout_rng": self.model.dropout_rng.bit_generator.state}
        save_model(self.path(CHECKPOINT), self.model, meta={"trainer": state},
                   extra={**self.opt.state(), **self.tracker.state(), **self.cache.state(),
                          **self.best.arrays()})
        # an interrupted run still leaves a student that eval and export read
        save_model(self.path(STUDENT), self.model, state=self.best.weights(self.model),
                   meta={"partial": True, "epochs_run": self.epoch,
                         "weights_from_epoch": self.best.epoch or self.epoch,
                         "config": self.cfg.to_dict(), "link": self.source.settings()})

    def finish(self, start, reason):
        totals = {"train_s": self.base["train_s"] + self.train_s,
                  "samples": self.base["samples"] + self.samples,
                  **self.totals()}  # bytes up to now: STOP and its answer included
        best_epoch = self.best.restore(self.model)
        test_acc = self.test_accuracy()
        summary = {
            "test_accuracy": test_acc, "epochs_run": self.epoch,
            "epochs_planned": self.cfg.epochs, "stop_reason": reason,
            "weights_from_epoch": best_epoch or self.epoch,
            "bytes_down": totals["bytes_down"], "bytes_up": totals["bytes_up"],
            "bytes_eval": totals["bytes_eval"], "bytes_wire": totals["bytes_wire"],
            "bytes_naive_run": self.naive(self.epoch),
            "bytes_naive_planned": self.naive(self.cfg.epochs),
            "settled_fraction": self.settled_fraction(),
            "kept": self.cache.used, "kept_bytes": self.cache.nbytes,
            "train_samples_per_s": totals["samples"] / totals["train_s"] if totals["train_s"] else 0.0,
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "params": self.model.num_params(),
            "weights_sha256": self.model.weights_sha256(),
            "wall_s": round(time.perf_counter() - start + self.base["wall_s"], 3),
        }
        save_model(self.path(STUDENT), self.model,
                   meta={"test_accuracy": test_acc, "config": self.cfg.to_dict(),
                         "link": self.source.settings(), "summary": summary})
        return summary
