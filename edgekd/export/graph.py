"""The export's in-memory description of a model: a chain of TFLite builtin ops.

Lowering (`lower.py`) produces it from an edgekd model, quantization (`quantize.py`) adds
int8 parameters to it, the flatbuffer writer (`flatbuffer.py`) serialises it and the reader
(`tflite_read.py`) recovers it from .tflite bytes, so the int8 reference inference and the
tests look at the same structure whichever way it came. Every tensor has a batch axis of 1;
tensor 0 is the model input and tensor i+1 the output of op i.
"""

from dataclasses import dataclass, field

import numpy as np

# TFLite builtin operators the exporter emits, by their schema names (the layers' plans
# lower to them)
from ..nn.plan import (  # noqa: F401 - this module is where export code takes them from
    AVERAGE_POOL_2D,
    CONV_2D,
    FULLY_CONNECTED,
    MAX_POOL_2D,
    MEAN,
    RESHAPE,
    SOFTMAX,
    TANH,
)

WEIGHTED = (FULLY_CONNECTED, CONV_2D)
POOLS = (MAX_POOL_2D, AVERAGE_POOL_2D)
OPS = (FULLY_CONNECTED, CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D, MEAN, RESHAPE, TANH, SOFTMAX)


@dataclass
class Op:
    kind: str
    out_shape: tuple
    act: str = "none"             # fused activation of FULLY_CONNECTED, CONV_2D and pools
    weight: np.ndarray = None     # float32; FC [out, in], CONV_2D OHWI [out, kh, kw, in]
    bias: np.ndarray = None       # float32 [out]
    stride: tuple = (1, 1)        # CONV_2D and pools: (h, w)
    padding: str = "VALID"        # CONV_2D: SAME or VALID (TensorFlow's SAME)
    pool: tuple = None            # pools: (h, w)
    axes: tuple = None            # MEAN: reduced axes
    # int8 only (see quantize.py): symmetric per-output-channel weights, int32 biases
    q_weight: np.ndarray = None
    w_scale: np.ndarray = None    # float32 [out]
    q_bias: np.ndarray = None


@dataclass
class Graph:
    input_shape: tuple
    ops: list = field(default_factory=list)
    # int8 only: (scale, zero_point) of tensor i (0 the input, i+1 the output of op i)
    quant: list = None

    @property
    def int8(self):
        return self.quant is not None

    @property
    def shapes(self):
        """Every tensor's shape: the input, then each op's output."""
        return [tuple(self.input_shape)] + [tuple(op.out_shape) for op in self.ops]

    @property
    def output_shape(self):
        return self.shapes[-1]

    def op_names(self):
        return [op.kind for op in self.ops]
