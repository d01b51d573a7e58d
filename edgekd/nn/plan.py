"""What a layer is, said once: its plan, derived from (config, input shape) without allocating.

A `LayerPlan` gives the output shape, the parameter and buffer shapes, the FLOPs of one
inference, the activations training keeps, the scratch (im2col) it needs, the TFLite ops it
lowers to and, for a convolution or pool, the window it slides (`Window`). The cost model, the
TFLM size model, the exporter and the fused training step read plans; none of them re-derives
a layer's geometry. `OpChain` strings the lowered ops of a model together the way the exporter writes
them (a RESHAPE wherever the tensor's view changes), so the size model costs what is written.

FLOP conventions (one sample, inference): a multiply-add is 2 FLOPs; a bias add and a fused
activation other than 'none' 1 per output element; pooling 1 per window element read; global
average pooling 1 per input element; batchnorm 2 per element (scale and shift); flatten and
dropout 0. Kept activations (per sample, training): a layer's input and output elements (a
conservative figure that also covers the gradient arrays alive during backward); a view
(flatten) keeps nothing.
"""

from dataclasses import dataclass, field, replace
from math import prod

FLOAT_BYTES = 4
# TFLite builtin operators the layers lower to, by their schema names
FULLY_CONNECTED, CONV_2D = "FULLY_CONNECTED", "CONV_2D"
MAX_POOL_2D, AVERAGE_POOL_2D = "MAX_POOL_2D", "AVERAGE_POOL_2D"
MEAN, RESHAPE, TANH, SOFTMAX = "MEAN", "RESHAPE", "TANH", "SOFTMAX"


@dataclass(frozen=True)
class LoweredOp:
    """One TFLite op a layer becomes, with what the exporter needs to emit it. Shapes carry
    the batch axis of 1."""
    kind: str
    in_shape: tuple | None       # the view of the current tensor it reads; None: as it is
    out_shape: tuple
    act: str = "none"            # fused activation (none, relu, relu6)
    stride: tuple = (1, 1)       # CONV_2D and pools: (h, w)
    padding: str = "VALID"       # CONV_2D: SAME or VALID (TensorFlow's SAME)
    pool: tuple = None           # pools: (h, w)
    axes: tuple = None           # MEAN: reduced axes; None: every axis but batch and channels
    weight: tuple = None         # (param, transpose axes, shape): the kernel as TFLite holds it
    bias: str = None             # the bias param
    layer: int = None            # index of the layer it comes from (set by OpChain)

    @property
    def weight_elems(self):
        return prod(self.weight[2]) if self.weight else 0

    @property
    def channels(self):
        """Output channels of a weighted op (FULLY_CONNECTED, CONV_2D), else 0."""
        return self.out_shape[-1] if self.weight else 0


@dataclass(frozen=True)
class Window:
    """The sliding window of a convolution or pooling layer over its channels-last input,
    as the kernels run it: [h, w, c] views (a 1-D layer has h = 1), the window size and
    stride as (h, w), and SAME padding resolved to (top, bottom, left, right) amounts."""
    in_hwc: tuple
    out_hwc: tuple
    size: tuple                  # kernel or pool (h, w)
    stride: tuple                # (h, w)
    pads: tuple = (0, 0, 0, 0)   # (top, bottom, left, right)


@dataclass(frozen=True)
class LayerPlan:
    type: str
    in_shape: tuple                              # one sample, no batch axis
    out_shape: tuple
    params: dict = field(default_factory=dict)   # trainable: name -> shape
    buffers: dict = field(default_factory=dict)  # saved, not trained: name -> (shape, fill)
    flops: int = 0                               # one sample, inference
    kept_elems: int = 0                          # activations kept for backward, per sample
    scratch_elems: int = 0                       # float32 scratch (im2col columns), per sample
    ops: tuple | None = ()                       # TFLite ops; () vanishes; None: no lowering
    folds: bool = False                          # folds into the weighted op before it
    activation: str | None = None                # its activation, for messages and kernels
    window: Window | None = None                 # convolutions and pools: their window

    @property
    def param_elems(self):
        return sum(prod(s) for s in self.params.values())

    @property
    def buffer_elems(self):
        return sum(prod(s) for s, _ in self.buffers.values())

    @property
    def scratch_bytes(self):
        return FLOAT_BYTES * self.scratch_elems

    @property
    def int8_bytes(self):
        """Deployed size as TFLite int8 stores it: 1 byte per kernel weight, 4 per int32 bias
        (what folds away costs nothing)."""
        return sum(op.weight_elems + 4 * op.channels for op in self.ops or ())


FUSED = ("none", "relu", "relu6")   # activations TFLite fuses into the op before them


def with_activation(op, act):
    """A weighted op with `act`: fused when TFLite can fuse it, else a TANH op after it."""
    fused = replace(op, act=act if act in FUSED else "none")
    return (fused, LoweredOp(TANH, None, op.out_shape)) if act == "tanh" else (fused,)


class OpChain:
    """The lowered ops of a model in the order they run, with a RESHAPE wherever an op reads
    another view of the current tensor (a reshape right after a reshape merges into one)."""

    def __init__(self, input_shape):
        self.input = self.shape = (1,) + tuple(input_shape)
        self.ops = []
        self.appended = 0        # ops ever appended (a merged RESHAPE counts): "did it change?"

    def _append(self, op):
        self.ops.append(op)
        self.shape = tuple(op.out_shape)
        self.appended += 1

    def reshape_to(self, shape, layer=None):
        """Give the current tensor `shape`, merging with a RESHAPE just appended."""
        shape = tuple(shape)
        if shape == self.shape:
            return
        if self.ops and self.ops[-1].kind == RESHAPE:
            self.ops.pop()
            self.shape = tuple(self.ops[-1].out_shape) if self.ops else self.input
            if shape == self.shape:
                return
        self._append(LoweredOp(RESHAPE, self.shape, shape, layer=layer))

    def add(self, op, layer=None):
        """Append `op` (from layer number `layer`), reshaping the tensor to the view it reads;
        a MEAN without axes reduces every axis of that view but batch and channels."""
        if op.kind == RESHAPE:
            self.reshape_to(op.out_shape, layer)
            return
        if op.in_shape is not None:
            self.reshape_to(op.in_shape, layer)
        fill = {"in_shape": self.shape, "layer": layer}
        if op.kind == MEAN and op.axes is None:
            fill["axes"] = tuple(range(1, len(self.shape) - 1))
        self._append(replace(op, **fill))


def chain(input_shape, plans, final_shape=None):
    """The OpChain of `plans` (folding layers contribute nothing here), ending in
    `final_shape` (batch axis included) when given."""
    c = OpChain(input_shape)
    for i, plan in enumerate(plans):
        for op in plan.ops or ():
            c.add(op, i)
    if final_shape is not None:
        c.reshape_to(final_shape)
    return c
