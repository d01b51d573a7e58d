"""The optional `tflite-micro` package, imported only when export needs it.

Export and the TFLM runs are host-side; a device that trains never loads them, and a host
without the package gets one line that says how to install it.
"""

import importlib

from ..errors import EdgekdError

INSTALL_HINT = "pip install 'edgekd[mcu]'"


def tflm(module):
    """Import `tflite_micro.<module>` or fail with the install hint."""
    try:
        return importlib.import_module(f"tflite_micro.{module}")
    except ImportError as e:
        raise EdgekdError(f"TFLite export needs the tflite-micro package ({e}); "
                          f"install it with: {INSTALL_HINT}") from None


def schema():
    """The TFLite flatbuffer schema classes that tflite-micro ships."""
    return tflm("tensorflow.lite.micro.python.schema_py_generated")


def model_editor():
    return tflm("tensorflow.lite.micro.compression.model_editor")


def runtime():
    return tflm("python.tflite_micro.runtime")
