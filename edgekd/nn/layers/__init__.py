"""All layer types; importing this package fills the registry."""

from . import batchnorm, conv, dense, dropout, pool, reshape  # noqa: F401
from .base import REGISTRY, Layer

__all__ = ["REGISTRY", "Layer"]
