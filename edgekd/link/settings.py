"""Link settings: how soft labels and inputs are encoded on the link. Chosen by the device in
its HELLO, kept in the run's checkpoint (as the source's `settings()`), so a resumed run asks
for the codecs it started with. Training settings are edgekd.distill.config's."""

from dataclasses import asdict, dataclass

from ..errors import EdgekdError
from .codecs import SOFT_CODECS, X_CODECS

# the training-config keys that held these settings in checkpoints written before the split
LEGACY_KEYS = ("codec", "x_codec", "topk")


@dataclass
class LinkConfig:
    codec: str = "topk"          # soft labels on the link: f32, f16, topk
    x_codec: str = "u8"          # inputs on the link: f32, f16, u8
    topk: int = 4

    @classmethod
    def choose(cls, codec, x_codec=None, topk=4):
        """--x-codec defaults to f32 beside --codec f32 (the naive baseline), else to u8."""
        return cls(codec, x_codec or ("f32" if codec == "f32" else cls.x_codec), topk).check()

    def check(self):
        if self.codec not in SOFT_CODECS or self.x_codec not in X_CODECS:
            raise EdgekdError(f"unknown codec {self.codec}/{self.x_codec}")
        if not 1 <= self.topk <= 255:
            raise EdgekdError(f"topk must be in 1..255, got {self.topk}")
        return self

    def source_kwargs(self):
        """Keyword arguments of the link sources (LinkSource, LocalSource, DeviceDataSource)."""
        return {"codec": self.codec, "x_codec": self.x_codec, "k": self.topk}

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: d[k] for k in LEGACY_KEYS if k in d}).check()
