"""Lower an edgekd model to a chain of TFLite ops (see graph.py), from its layers' plans.

Each layer's plan names the TFLite ops it becomes (edgekd/nn/plan.py); `OpChain` strings them
together with a RESHAPE wherever the view of the tensor changes (conv1d and the 1-D pools run
as their 2-D ops on a height-1 tensor). This module only attaches the weights, in TFLite's
layouts, and folds what folds: a batchnorm folds into the dense or conv op before it (its
`fold`), which is only possible when that op has no activation.
"""

import numpy as np

from ..errors import EdgekdError
from ..nn.layers import REGISTRY, Layer
from ..nn.plan import SOFTMAX, LoweredOp, OpChain
from .graph import Graph, Op


def lower(model, softmax=False):
    """The float32 Graph of `model` (an edgekd Sequential), logits out, or probabilities
    with `softmax`. One-line EdgekdError for what cannot be exported."""
    c, folds = OpChain(model.input_shape), {}
    foldable, last = None, "the input"
    for i, layer in enumerate(model.layers):
        plan, where = layer.plan, f"layer {i} ({layer.plan.type})"
        if plan.ops is None:
            raise EdgekdError(f"{where} cannot be exported to TFLite; supported layers: "
                              f"{', '.join(exportable())}")
        _check_finite(layer, where)
        if plan.folds:
            if foldable is None:
                raise EdgekdError(f"{where} follows {last}: export folds a {plan.type} into the "
                                  f"dense or conv layer before it, which needs that layer to "
                                  f"have no activation")
            folds.setdefault(foldable, []).append(layer)
            continue
        appended = c.appended
        for op in plan.ops:
            c.add(op, i)
        if plan.ops:
            act = plan.activation
            last = where if act is None else f"{where} with activation {act}"
        if c.appended != appended:
            top = c.ops[-1]
            foldable = len(c.ops) - 1 if top.weight is not None and top.act == "none" else None
    c.reshape_to((1,) + tuple(model.layers[-1].out_shape))
    if softmax:
        c.add(LoweredOp(SOFTMAX, None, c.shape))
    ops = [_op(model, k, op, folds.get(k, ())) for k, op in enumerate(c.ops)]
    return Graph((1,) + tuple(model.input_shape), ops)


def exportable():
    """The layer types that lower to TFLite, in the registry's order."""
    return [t for t, cls in REGISTRY.items() if cls.lowered_ops is not Layer.lowered_ops]


def _op(model, k, op, folds):
    """The export Op of chain op `op`: its weights in TFLite's layout, folds applied."""
    weight = bias = None
    if op.weight is not None:
        params = model.layers[op.layer].params
        name, axes, shape = op.weight
        weight = _f32(np.transpose(params[name], axes).reshape(shape))
        bias = _f32(params[op.bias])
        for layer in folds:
            weight, bias = layer.fold(weight, bias)
    return Op(op.kind, tuple(op.out_shape), op.act, weight=weight, bias=bias,
              stride=tuple(op.stride), padding=op.padding, pool=op.pool, axes=op.axes)


def _check_finite(layer, where):
    for name, a in {**layer.params, **layer.buffers}.items():
        if not np.all(np.isfinite(a)):
            raise EdgekdError(f"{where}: {name} holds NaN or inf; nothing to export")


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)
