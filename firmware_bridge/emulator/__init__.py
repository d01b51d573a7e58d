"""A board emulator: the board protocol served on a pseudo-terminal, deployed models run in
the TFLM interpreter (tflite-micro) inside the board's arena, the last layer trained with
edgekd's kernels, the board profile's RAM and flash enforced, faults injectable."""

from .board import BoardSpec, EmulatedBoard
from .server import serve

__all__ = ["BoardSpec", "EmulatedBoard", "serve"]
