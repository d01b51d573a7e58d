"""Link settings: how soft labels and inputs are encoded on the link. Chosen by the device in
its HELLO, kept in the run's checkpoint (as the source's `settings()`), so a resumed run asks
for the codecs it started with. Training settings are edgekd.distill.config's."""

from dataclasses import asdict, dataclass

from ..errors import EdgekdError
from .codecs import SOFT_CODECS, X_CODECS
from .messages import COMPRESSIONS

# the training-config keys that held these settings in checkpoints written before the split
LEGACY_KEYS = ("codec", "x_codec", "topk")


@dataclass
class LinkConfig:
    codec: str = "topk"          # soft labels on the link: f32, f16, topk
    x_codec: str = "u8"          # inputs on the link: f32, f16, u8
    topk: int = 4
    compress: str = "zlib"       # BATCH payloads: zlib (u8 images deflate to about half) or none

    @classmethod
    def choose(cls, codec, x_codec=None, topk=4, compress=None):
        """--x-codec defaults to f32 beside --codec f32 (the naive baseline), else to u8;
        --compress to none beside --codec f32, else to the default."""
        return cls(codec, x_codec or ("f32" if codec == "f32" else cls.x_codec), topk,
                   compress or ("none" if codec == "f32" else cls.compress)).check()

    def check(self):
        if self.codec not in SOFT_CODECS or self.x_codec not in X_CODECS:
            raise EdgekdError(f"unknown codec {self.codec}/{self.x_codec}")
        if self.compress not in COMPRESSIONS:
            raise EdgekdError(f"unknown compression {self.compress!r} ({', '.join(COMPRESSIONS)})")
        if not 1 <= self.topk <= 255:
            raise EdgekdError(f"topk must be in 1..255, got {self.topk}")
        return self

    def source_kwargs(self):
        """Keyword arguments of the link sources (LinkSource, LocalSource, DeviceDataSource)."""
        return {"codec": self.codec, "x_codec": self.x_codec, "k": self.topk,
                "compress": self.compress}

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Settings saved before BATCH compression existed meant none."""
        return cls(**{k: d[k] for k in LEGACY_KEYS if k in d},
                   compress=d.get("compress", "none")).check()
