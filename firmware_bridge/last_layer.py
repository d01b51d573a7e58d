"""The trainable last layer of a deployed .tflite: the FULLY_CONNECTED op that emits the
logits, found in the model edgekd.export's reader gives (the emulator trains it for
TRAIN_LAST, the int8-blob converter ekb.py refuses models without one)."""

from dataclasses import dataclass

import numpy as np

from edgekd.errors import EdgekdError
from edgekd.export.tflite_read import TfliteOperator, TfliteTensor


@dataclass
class LastDense:
    """The model's last FULLY_CONNECTED layer: what TRAIN_LAST trains in float."""
    op: TfliteOperator
    features: TfliteTensor     # its input: the penultimate activations
    weights: TfliteTensor      # [out, in]
    bias: TfliteTensor | None
    output: TfliteTensor

    def float_params(self):
        """Float32 weights [out, in] and bias [out] as the quantized layer computes them."""
        w = self.weights.data
        if w.dtype == np.float32:
            wf = w.astype(np.float32)
        else:
            wf = w.astype(np.float32) * _per_row(self.weights.scale, w.shape[0])
        out = wf.shape[0]
        if self.bias is None:
            return wf, np.zeros(out, np.float32)
        b = self.bias.data
        if b.dtype == np.float32:
            return wf, b.astype(np.float32)
        bscale = self.bias.scale if self.bias.scale is not None else \
            self.features.scale[0] * self.weights.scale
        return wf, b.astype(np.float32) * _per_row(bscale, out)[:, 0]


def _per_row(scale, rows):
    s = np.asarray(scale, np.float32)
    return (np.full(rows, s[0], np.float32) if s.size == 1 else s)[:, None]


_PASS_THROUGH = ("DEQUANTIZE", "RESHAPE")


def last_dense(model, where="model"):
    """The FULLY_CONNECTED op whose output is the model's output (through DEQUANTIZE or
    RESHAPE at most); EdgekdError if there is none, or if it is followed by a softmax or has
    a fused activation (its output must be logits)."""
    if len(model.outputs) != 1:
        raise EdgekdError(f"{where}: has {len(model.outputs)} outputs; a classifier has one")
    t = model.outputs[0]
    op = model.producer(t)
    while op is not None and op.kind in _PASS_THROUGH:
        t = op.inputs[0]
        op = model.producer(t)
    if op is None or op.kind != "FULLY_CONNECTED":
        kind = "no operator" if op is None else op.kind
        raise EdgekdError(f"{where}: its output comes from {kind}, not from a dense layer: "
                          f"the last layer must be a dense layer emitting logits (export "
                          f"without softmax)")
    if op.options.get("activation", "none") != "none":
        raise EdgekdError(f"{where}: the last dense layer has a fused "
                          f"{op.options['activation']}; it must emit logits")
    w = model.tensors[op.inputs[1]]
    if w.data is None or len(w.shape) != 2:
        raise EdgekdError(f"{where}: the last dense layer's weights are not a constant matrix")
    bias = model.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    return LastDense(op, model.tensors[op.inputs[0]], w, bias, model.tensors[op.outputs[0]])
