"""Early halting, decided on the device.

Per-sample: sample i is *settled* once KL(p_T || p_S) at temperature T is <= eps (threshold
`relative`, the default: eps times the teacher's information on that sample, KL(p_T ||
uniform); `absolute`: eps itself) and the student's argmax equals the teacher's for `patience`
consecutive visits, and at least `settle_after` epochs have passed. Settled samples are
reported to the host, which stops sending them. A settled sample the device holds (kept in
distill.device_cache, or served from memory by the source: device-data's cached labels,
fetch-once) is still replayed, per the policy:
  skip      never visited again;
  rehearse  (default) replayed with probability `rehearse_prob` (default 1) per epoch;
  wake      as rehearse, and a replay whose KL exceeds `eps_wake` un-settles the sample.
A settled sample the device does not hold is not sent again, except as a probe: each epoch
the device asks for a seeded `probe_prob` share of them back (WAKE before the epoch); a probe
that still meets the settle rule is halted again, one that does not is un-settled and streamed
until it settles anew. docs/halting.md gives the measurements that chose these defaults.
Per-epoch: stop when the settled fraction reaches `rho`, when the validation signal has not
improved by `delta` for `patience_epochs` epochs, or when a byte or time budget runs out.
"""

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import EdgekdError

POLICIES = ("skip", "rehearse", "wake")
THRESHOLDS = ("relative", "absolute")
KEEP = ("first", "settled")   # which samples the device keeps, within --cache-budget


@dataclass
class HaltingConfig:
    enabled: bool = True
    eps: float = 0.02
    threshold: str = "relative"
    patience: int = 2
    settle_after: int = 0     # epochs that must pass before any sample may settle
    min_samples: int = 1000   # smaller training splits: no per-sample halting (epoch halting stays)
    policy: str = "rehearse"
    keep: str = "first"
    rehearse_prob: float = 1.0
    probe_prob: float = 0.0   # per epoch, the share of settled samples not held sent back as probes
    eps_wake: float = 0.2
    rho: float = 0.98
    delta: float = 0.001
    patience_epochs: int = 10
    byte_budget: int | None = None
    time_budget_s: float | None = None

    def check(self):
        if self.policy not in POLICIES:
            raise EdgekdError(f"halting policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.threshold not in THRESHOLDS:
            raise EdgekdError(f"halting threshold must be one of {', '.join(THRESHOLDS)}, "
                              f"got {self.threshold!r}")
        if self.keep not in KEEP:
            raise EdgekdError(f"halting keep must be one of {', '.join(KEEP)}, got {self.keep!r}")
        for name, lo, hi in (("eps", 0, None), ("eps_wake", 0, None), ("rho", 0, 1),
                             ("rehearse_prob", 0, 1), ("probe_prob", 0, 1), ("delta", 0, None)):
            v = getattr(self, name)
            if not np.isfinite(v) or v < lo or (hi is not None and v > hi):
                raise EdgekdError(f"halting {name} must be in [{lo}, {hi if hi is not None else 'inf'}], got {v}")
        if self.patience < 1 or self.patience_epochs < 1 or self.settle_after < 0 \
                or self.min_samples < 0:
            raise EdgekdError("halting patience values must be >= 1 (settle_after, min_samples >= 0)")
        if self.policy == "wake" and self.eps_wake < self.eps:
            raise EdgekdError(f"eps_wake ({self.eps_wake}) must be >= eps ({self.eps})")
        return self

    def to_dict(self):
        return asdict(self)


class SettleTracker:
    """Per-sample streaks and the settled set, over ids 0..n-1 of the training split.
    `train_samples` (those trained on) below cfg.min_samples switches settling off: on a set
    that small every skipped sample is a large share of the data, and the link is cheap."""

    def __init__(self, n, cfg, train_samples=None):
        self.cfg = cfg
        self.active = cfg.enabled and (train_samples is None or train_samples >= cfg.min_samples)
        self.streak = np.zeros(n, np.int32)
        self.settled = np.zeros(n, bool)

    def observe(self, ids, kl, agree, epoch=None, info=None):
        """Record one visit of each id (in 0-based `epoch`, if known); returns the ids that
        settled on this visit. Before `settle_after` epochs, streaks grow but nothing settles.
        `info` (teacher_information per sample) is what a relative threshold scales with."""
        ok = (kl <= self.limit(self.cfg.eps, info)) & agree
        self.streak[ids] = np.where(ok, self.streak[ids] + 1, 0)
        if not self.active or (epoch is not None and epoch < self.cfg.settle_after):
            return ids[:0]
        new = ids[(self.streak[ids] >= self.cfg.patience) & ~self.settled[ids]]
        self.settled[new] = True
        return new

    def limit(self, eps, info):
        if self.cfg.threshold == "relative" and info is not None:
            return eps * info
        return eps

    def rehearse(self, ids, kl, info=None):
        """Check rehearsed (settled) ids; under `wake`, drifted ones un-settle. Returns them."""
        if self.cfg.policy != "wake":
            return ids[:0]
        return self._unsettle(ids[kl > self.limit(self.cfg.eps_wake, info)])

    def probe(self, ids, kl, agree, info=None):
        """Check probed (settled, streamed again) ids: those that no longer meet the settle
        rule (KL above eps, argmax disagreeing) un-settle. Returns them."""
        return self._unsettle(ids[(kl > self.limit(self.cfg.eps, info)) | ~agree])

    def _unsettle(self, ids):
        self.settled[ids] = False
        self.streak[ids] = 0
        return ids

    def state(self):
        return {"halt.streak": self.streak, "halt.settled": self.settled}

    def load_state(self, arrays):
        self.streak[...] = arrays["halt.streak"]
        self.settled[...] = arrays["halt.settled"]


class EpochHalter:
    """Decides, after each epoch (budgets: after each batch), whether training should stop."""

    def __init__(self, cfg, signal="validation score", lower_is_better=False):
        self.cfg = cfg
        self.signal, self.sign = signal, -1.0 if lower_is_better else 1.0
        self.best = -np.inf
        self.stale = 0

    def after_epoch(self, settled_fraction, val_value):
        """Returns a STOP reason or None. `val_value` is None when there is no validation slice."""
        val_score = None if val_value is None else self.sign * val_value
        if not self.cfg.enabled:
            return None
        if settled_fraction >= self.cfg.rho:
            return f"settled: {settled_fraction:.1%} of samples settled (rho {self.cfg.rho:.0%})"
        if val_score is not None:
            if val_score > self.best + self.cfg.delta:
                self.best, self.stale = val_score, 0
            else:
                self.stale += 1
                if self.stale >= self.cfg.patience_epochs:
                    return (f"plateau: {self.signal} did not improve by {self.cfg.delta} "
                            f"for {self.stale} epochs (best {self.sign * self.best:.4f})")
        return None

    def budget(self, link_bytes, elapsed_s):
        """Budgets hold with or without halting: they are the user's hard limits."""
        if self.cfg.byte_budget is not None and link_bytes >= self.cfg.byte_budget:
            return f"byte-budget: {link_bytes} bytes on the link (budget {self.cfg.byte_budget})"
        if self.cfg.time_budget_s is not None and elapsed_s >= self.cfg.time_budget_s:
            return f"time-budget: {elapsed_s:.1f} s (budget {self.cfg.time_budget_s} s)"
        return None

    def state(self):
        return {"best": None if not np.isfinite(self.best) else float(self.best), "stale": self.stale}

    def load_state(self, d):
        self.best = -np.inf if d["best"] is None else d["best"]
        self.stale = d["stale"]
