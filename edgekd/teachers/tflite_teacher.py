"""A teacher in TensorFlow Lite, run by ai-edge-litert (the `host` extra; imported only when one
is loaded).

One input, channels-last `[batch, *input_shape]`, float32 or full-integer quantized (int8 or
uint8: inputs are quantized with the input tensor's scale and zero point); one output
`[batch, classes]` of logits, float32 or quantized (dequantized with its own scale and zero
point). Converted models usually fix the batch axis at 1: the input is resized to the chunk's
size when the graph allows it, and otherwise the model runs sample by sample.
"""

import functools
import os

import numpy as np

from ..errors import EdgekdError

CHUNK = 256         # samples per invocation when the batch axis can be resized
QUANTIZED = (np.int8, np.uint8)


def _one_line(e, limit=200):
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _import_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise EdgekdError(f"{path}: TFLite teachers need ai-edge-litert, which is not installed: "
                          f"pip install 'edgekd[host]'") from None
    # The built-in kernels without the default XNNPACK delegate: the same results, and no
    # "INFO: Created ... delegate" line on stderr, which the CLI keeps for one-line errors.
    return functools.partial(
        Interpreter,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def _quant(details, what, path):
    scale, zero = details["quantization"]
    if not scale or not np.isfinite(scale):
        raise EdgekdError(f"{path}: the {what} tensor is {np.dtype(details['dtype']).name} but "
                          f"has no quantization scale")
    return float(scale), int(zero)


class TfliteTeacher:
    def __init__(self, path):
        self.path = path = os.fspath(path)
        self.spec = None
        if not os.path.isfile(path):
            raise EdgekdError(f"{path}: no such TFLite file")
        self._Interpreter = _import_interpreter(path)
        with open(path, "rb") as f:
            self._content = f.read()
        it = self._interpreter()
        inputs, outputs = it.get_input_details(), it.get_output_details()
        if len(inputs) != 1:
            raise EdgekdError(f"{path}: the model has {len(inputs)} inputs; a teacher takes "
                              f"exactly one")
        if len(outputs) != 1:
            raise EdgekdError(f"{path}: the model has {len(outputs)} outputs; a teacher gives "
                              f"exactly one, the logits")
        inp, out = inputs[0], outputs[0]
        shape = [int(d) for d in inp["shape"]]
        sig = [int(d) for d in inp.get("shape_signature", inp["shape"])]
        if len(shape) < 2:
            raise EdgekdError(f"{path}: the input has shape {shape}; expected [batch, features...]")
        if any(d <= 0 for d in sig[1:]) or any(d <= 0 for d in shape[1:]):
            raise EdgekdError(f"{path}: the input has shape {sig}: every axis but the batch axis "
                              f"must be a known number")
        if sig[0] != -1 and shape[0] != 1:
            raise EdgekdError(f"{path}: the input's batch axis is fixed at {shape[0]}; it must be "
                              f"1 or dynamic")
        self.input_shape = tuple(shape[1:])
        self.in_dtype, self.out_dtype = np.dtype(inp["dtype"]), np.dtype(out["dtype"])
        if self.in_dtype == np.float32:
            self.in_q = None
        elif self.in_dtype in QUANTIZED:
            self.in_q = _quant(inp, "input", path)
        else:
            raise EdgekdError(f"{path}: the input is {self.in_dtype.name}; TFLite teachers take "
                              f"float32, int8 or uint8 inputs")
        if self.out_dtype == np.float32:
            self.out_q = None
        elif self.out_dtype in QUANTIZED:
            self.out_q = _quant(out, "output", path)
        else:
            raise EdgekdError(f"{path}: the output is {self.out_dtype.name}; expected float32, "
                              f"int8 or uint8 logits")
        self.in_index, self.out_index = inp["index"], out["index"]
        self.per_sample = False     # set once resizing the batch axis turns out not to work
        self._it, self._batch = it, None
        y = self._invoke(np.zeros((1, *self.input_shape), np.float32))
        if y.shape[1] < 2:
            raise EdgekdError(f"{path}: the output has {y.shape[1]} class; a teacher needs at "
                              f"least 2")
        self.num_classes = int(y.shape[1])

    def _interpreter(self):
        try:
            it = self._Interpreter(model_content=self._content)
            it.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - the wrapper raises ValueError/RuntimeError
            raise EdgekdError(f"{self.path}: not a valid TFLite model ({_one_line(e)})") from None
        return it

    def _resize(self, n):
        """Make the interpreter take n samples at once; False if the graph will not have it."""
        if self._batch == n:
            return True
        try:
            self._it.resize_tensor_input(self.in_index, [n, *self.input_shape], strict=False)
            self._it.allocate_tensors()
        except Exception:  # noqa: BLE001 - e.g. a RESHAPE to a fixed [1, ...] shape
            self._it, self._batch = self._interpreter(), None     # a fresh, batch-1 interpreter
            return False
        self._batch = n
        return True

    def _invoke(self, x):
        n = len(x)
        if n != (self._batch or 1) and not self._resize(n):
            raise _CannotBatch
        if self.in_q is None:
            xin = x
        else:
            scale, zero = self.in_q
            info = np.iinfo(self.in_dtype)
            xin = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.in_dtype)
        try:
            self._it.set_tensor(self.in_index, xin)
            self._it.invoke()
            y = self._it.get_tensor(self.out_index)
        except Exception as e:  # noqa: BLE001
            raise EdgekdError(f"{self.path}: the TFLite interpreter failed: {_one_line(e)}") from None
        if y.ndim != 2 or y.shape[0] != n:
            if n > 1:
                raise _CannotBatch
            raise EdgekdError(f"{self.path}: the output has shape {list(y.shape)} for one sample; "
                              f"expected [1, classes]")
        if self.out_q is not None:
            scale, zero = self.out_q
            y = (y.astype(np.float32) - zero) * np.float32(scale)
        return np.array(y, np.float32)

    def logits(self, x):
        x = np.ascontiguousarray(x, np.float32)
        if x.shape[1:] != self.input_shape:
            raise EdgekdError(f"{self.path}: the teacher takes samples of shape "
                              f"{list(self.input_shape)}, got {list(x.shape[1:])}")
        out = []
        i = 0
        while i < len(x):
            step = 1 if self.per_sample else CHUNK
            chunk = x[i:i + step]
            try:
                out.append(self._invoke(chunk))
            except _CannotBatch:
                self.per_sample = True
                self._it, self._batch = self._interpreter(), None
                continue
            i += len(chunk)
        if not out:
            return np.zeros((0, self.num_classes), np.float32)
        y = np.concatenate(out)
        if y.shape[1] != self.num_classes:
            raise EdgekdError(f"{self.path}: the output has {y.shape[1]} classes, expected "
                              f"{self.num_classes}")
        return y


class _CannotBatch(Exception):
    """The graph does not run with a batch axis other than 1."""
