"""Export to microcontrollers: .tflite (float32, full-integer int8) built with the schema
tflite-micro ships, C arrays for firmware, TFLM runs, and an int8 reference inference.

Host-side only: the device path never imports this package; tflite-micro is imported
lazily, with an install hint when it is missing.
"""

from .api import build_tflite, export_tflite
from .c_array import write_c_array

__all__ = ["build_tflite", "export_tflite", "write_c_array"]
