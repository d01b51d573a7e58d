"""A teacher in ONNX, run by onnxruntime (the `host` extra; imported only when one is loaded).

The model takes one float32 input, channels-last `[batch, *input_shape]` like edgekd's data (no
transposes are inserted: an NCHW model needs its own transpose in front), and gives one output
`[batch, classes]` of logits. The batch axis may be symbolic (the whole chunk runs at once) or
fixed at 1 (the model runs sample by sample); every other axis must be a known number.
"""

import os

import numpy as np

from ..errors import EdgekdError

CHUNK = 256     # samples per run when the batch axis is free: bounds the activations' memory


def _one_line(e, limit=200):
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _import_onnxruntime(path):
    try:
        import onnxruntime
    except ImportError:
        raise EdgekdError(f"{path}: ONNX teachers need onnxruntime, which is not installed: "
                          f"pip install 'edgekd[host]'") from None
    return onnxruntime


def _dim(d):
    """An ONNX dim as onnxruntime reports it: an int when fixed, else None (name or None)."""
    return d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None


class OnnxTeacher:
    def __init__(self, path):
        self.path = path = os.fspath(path)
        self.spec = None
        if not os.path.isfile(path):
            raise EdgekdError(f"{path}: no such ONNX file")
        ort = _import_onnxruntime(path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3         # errors only: warnings would break one-line output
        try:
            self.session = ort.InferenceSession(path, sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own pybind types
            raise EdgekdError(f"{path}: not a valid ONNX model ({_one_line(e)})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise EdgekdError(f"{path}: the model has {len(inputs)} inputs "
                              f"({', '.join(i.name for i in inputs)}); a teacher takes exactly one")
        if len(outputs) != 1:
            raise EdgekdError(f"{path}: the model has {len(outputs)} outputs "
                              f"({', '.join(o.name for o in outputs)}); a teacher gives exactly "
                              f"one, the logits")
        inp, out = inputs[0], outputs[0]
        if inp.type != "tensor(float)":
            raise EdgekdError(f"{path}: input {inp.name!r} is {inp.type}; ONNX teachers need a "
                              f"float32 input")
        shape = inp.shape
        if not isinstance(shape, (list, tuple)) or len(shape) < 2:
            raise EdgekdError(f"{path}: input {inp.name!r} has shape {shape}; expected "
                              f"[batch, features...] with known feature sizes")
        dims = [_dim(d) for d in shape[1:]]
        if any(d is None for d in dims):
            raise EdgekdError(f"{path}: input {inp.name!r} has shape {list(shape)}: every axis "
                              f"but the batch axis must be a known number")
        batch = _dim(shape[0])
        if batch not in (None, 1):
            raise EdgekdError(f"{path}: input {inp.name!r} has its batch axis fixed at {batch}; "
                              f"it must be symbolic or 1")
        self.input_name, self.output_name = inp.name, out.name
        self.input_shape = tuple(dims)
        self.per_sample = batch == 1
        oshape = out.shape if isinstance(out.shape, (list, tuple)) else None
        if oshape is not None and len(oshape) != 2:
            raise EdgekdError(f"{path}: output {out.name!r} has shape {list(oshape)}; a teacher's "
                              f"output must be [batch, classes]")
        classes = _dim(oshape[1]) if oshape is not None else None
        if classes is None:     # not declared: find it from one sample of zeros
            classes = self._run(np.zeros((1, *self.input_shape), np.float32)).shape[1]
        if classes < 2:
            raise EdgekdError(f"{path}: output {out.name!r} has {classes} class; a teacher "
                              f"needs at least 2")
        self.num_classes = int(classes)

    def _run(self, x):
        try:
            y = self.session.run([self.output_name], {self.input_name: x})[0]
        except Exception as e:  # noqa: BLE001
            raise EdgekdError(f"{self.path}: onnxruntime failed: {_one_line(e)}") from None
        y = np.asarray(y)
        if y.ndim != 2 or y.shape[0] != len(x):
            raise EdgekdError(f"{self.path}: output has shape {list(y.shape)} for {len(x)} "
                              f"samples; expected [{len(x)}, classes]")
        return y

    def logits(self, x):
        x = np.ascontiguousarray(x, np.float32)
        if x.shape[1:] != self.input_shape:
            raise EdgekdError(f"{self.path}: the teacher takes samples of shape "
                              f"{list(self.input_shape)}, got {list(x.shape[1:])}")
        step = 1 if self.per_sample else CHUNK
        out = [self._run(x[i:i + step]) for i in range(0, len(x), step)]
        if not out:
            return np.zeros((0, self.num_classes), np.float32)
        y = np.concatenate(out).astype(np.float32, copy=False)
        if y.shape[1] != self.num_classes:
            raise EdgekdError(f"{self.path}: output has {y.shape[1]} classes, expected "
                              f"{self.num_classes}")
        return y
