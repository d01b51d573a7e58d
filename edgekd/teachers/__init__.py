"""Teacher backends on the host: anything that turns inputs into logits.

Every backend has `logits(x) -> float32 [n, classes]` for channels-last float32 inputs
`[n, *input_shape]`, and the attributes `num_classes`, `input_shape`, `path` and `spec` (the
edgekd spec for a native teacher, None otherwise). Backends that need optional packages
(onnxruntime, ai-edge-litert) import them only when such a teacher is loaded.
"""

import os

from ..errors import EdgekdError
from .native import NativeTeacher

__all__ = ["FORMATS", "NativeTeacher", "load_teacher"]

FORMATS = {".npz": "an edgekd teacher", ".onnx": "ONNX", ".tflite": "TensorFlow Lite",
           ".npy": "precomputed logits of the training split"}


def load_teacher(path, data=None):
    """Load a teacher by its file extension. With `data` (an edgekd Dataset), also check that
    the teacher reads its samples and covers its classes; precomputed logits (.npy), rows of
    its training split, need it."""
    teacher = _load(os.fspath(path), data)
    if data is not None:
        data.check_model(teacher.input_shape, teacher.num_classes, f"teacher {teacher.path}")
    return teacher


def _load(path, data):
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return NativeTeacher(path)
    if ext == ".onnx":
        from .onnx_teacher import OnnxTeacher
        return OnnxTeacher(path)
    if ext == ".tflite":
        from .tflite_teacher import TfliteTeacher
        return TfliteTeacher(path)
    if ext == ".npy":
        from .precomputed import PrecomputedTeacher
        return PrecomputedTeacher(path, data)
    known = ", ".join(f"{e} ({what})" for e, what in FORMATS.items())
    raise EdgekdError(f"{path}: unsupported teacher format; expected one of {known}")
