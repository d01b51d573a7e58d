"""Training configuration: plain data, stored in checkpoints so a resumed run is the same run.
How the link encodes what it carries is the link's own setting (edgekd.link.settings)."""

from dataclasses import asdict, dataclass, field, fields

from ..errors import EdgekdError
from .halting import HaltingConfig
from .optim import LR_SCHEDULES, OPTIMIZERS, scheduled_lr

VAL_METRICS = ("accuracy", "agreement", "kl")
MAX_ECHO = 16

# what a run directory (`edgekd train --out`) holds
CHECKPOINT = "checkpoint.npz"   # every epoch, atomically: weights, optimizer, halting state
STUDENT = "student.npz"         # the best weights so far; the final student at the end
METRICS = "metrics.jsonl"       # one JSON line per finished epoch


@dataclass
class TrainConfig:
    epochs: int = 30
    batch: int = 32
    lr: float = 0.01
    lr_schedule: str = "cosine"
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    seed: int = 0
    temperature: float = 4.0
    alpha: float = 0.9
    kd: bool = True
    val_fraction: float = 0.1
    val_metric: str = "kl"
    restore_best: bool = True
    cache_budget: int = 1 << 20    # bytes of samples the device may keep (still encoded)
    echo: int = 3                  # steps in a row on each batch (data echoing)
    halting: HaltingConfig = field(default_factory=HaltingConfig)

    def check(self):
        if self.epochs < 1 or self.batch < 1:
            raise EdgekdError("epochs and batch must be >= 1")
        if not self.lr > 0:
            raise EdgekdError(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise EdgekdError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise EdgekdError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if not self.temperature > 0 or not 0 <= self.alpha <= 1:
            raise EdgekdError("temperature must be > 0 and alpha in [0, 1]")
        if not 0 <= self.val_fraction < 1:
            raise EdgekdError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_metric not in VAL_METRICS:
            raise EdgekdError(f"val_metric must be one of {', '.join(VAL_METRICS)}")
        if not isinstance(self.echo, int) or not 1 <= self.echo <= MAX_ECHO:
            raise EdgekdError(f"echo must be an integer in [1, {MAX_ECHO}], got {self.echo!r}")
        if not isinstance(self.cache_budget, int) or self.cache_budget < 0:
            raise EdgekdError(f"cache_budget must be a byte count >= 0, got {self.cache_budget!r}")
        self.halting.check()
        return self

    def lr_at(self, epoch):
        return scheduled_lr(self.lr, self.lr_schedule, epoch, self.epochs)

    @property
    def effective_alpha(self):
        """--no-kd trains on hard labels only: alpha 0 keeps the KL signal for halting."""
        return self.alpha if self.kd else 0.0

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """From a checkpoint; keys that are not training settings (the codecs that older
        checkpoints kept here) are left to whoever owns them."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        d.setdefault("echo", 1)   # checkpoints from before echo trained each batch once
        d["halting"] = HaltingConfig(**d.get("halting", {}))
        return cls(**d)
