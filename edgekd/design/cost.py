"""Analytic cost model of a student spec: params, FLOPs, storage, training and inference RAM.

Everything comes from the layers' plans (edgekd/nn/plan.py), which validate the spec and
allocate nothing; the FLOP conventions are stated there. A training step costs about 3x the
forward FLOPs (forward, input gradient, weight gradient): `ModelCost.train_flops_per_sample`.

Memory conventions (float32 = 4 bytes):
  * storage_bytes: 4 per trainable param + 4 per batchnorm running statistic;
  * int8_storage_bytes: as TFLite int8 stores them, 1 byte per kernel weight + 4 per bias
    (int32); batchnorm is folded into the layer before by export and costs nothing;
    per-channel quantization scales and the flatbuffer overhead are not counted;
  * train_ram_bytes = weights (params + buffers) + grads (params) + optimizer state
    (sgd/nesterov: 1 slot per param, adam/adamw: 2) + activations of one batch: every
    layer's kept activations and scratch (for conv layers the im2col matrix the numpy kernel
    materialises and keeps) x batch. Interpreter / Python overhead is not included.
  * infer_ram_bytes: the largest input + output pair of any layer for one sample, a lower
    bound for a TFLM tensor arena.
"""

from dataclasses import dataclass, field
from math import prod

from ..errors import EdgekdError
from ..nn.spec import plan_layers

OPTIMIZER_SLOTS = {"sgd": 1, "nesterov": 1, "adam": 2, "adamw": 2}
FLOAT = 4


@dataclass(frozen=True)
class LayerCost:
    index: int
    type: str
    in_shape: tuple
    out_shape: tuple
    params: int          # trainable elements
    buffers: int         # saved, not trained (batchnorm running mean/var)
    flops: int           # one sample, inference
    out_elems: int       # output activation elements, one sample
    kept_elems: int      # elements per sample counted for training (in + out + im2col)
    int8_bytes: int      # deployed size with TFLite int8 weights / int32 biases


@dataclass(frozen=True)
class ModelCost:
    params: int
    buffers: int
    flops: int                   # one sample, inference
    storage_bytes: int           # float32 deployed weights
    int8_storage_bytes: int
    train_ram_bytes: int         # weights + grads + optimizer + activations of one batch
    infer_ram_bytes: int
    weights_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    batch: int
    optimizer: str
    layers: list = field(repr=False)

    @property
    def train_flops_per_sample(self):
        return 3 * self.flops

    def latency_s(self, flops_per_s):
        return latency_s(self.flops, flops_per_s)


def latency_s(flops, flops_per_s):
    """Predicted seconds for `flops` at `flops_per_s`; None when the speed is unknown."""
    if flops_per_s is None:
        return None
    if flops_per_s <= 0:
        raise EdgekdError(f"speed must be positive, got {flops_per_s!r} FLOP/s")
    return flops / flops_per_s


def check_optimizer(optimizer):
    if optimizer not in OPTIMIZER_SLOTS:
        raise EdgekdError(f"unknown optimizer {optimizer!r}; choose from "
                          f"{', '.join(OPTIMIZER_SLOTS)}")


def check_batch(batch):
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise EdgekdError(f"batch must be a positive integer, got {batch!r}")


def layer_costs(plans):
    """Per-layer figures of a model's plans (`plan_layers`)."""
    return [LayerCost(i, p.type, p.in_shape, p.out_shape, p.param_elems, p.buffer_elems,
                      p.flops, prod(p.out_shape), p.kept_elems + p.scratch_elems, p.int8_bytes)
            for i, p in enumerate(plans)]


def model_cost(spec, batch=32, optimizer="adam"):
    """The cost of `spec` (validated) trained at `batch` with `optimizer` (sgd, nesterov,
    adam, adamw)."""
    check_batch(batch)
    check_optimizer(optimizer)
    layers = layer_costs(plan_layers(spec))
    params = sum(lc.params for lc in layers)
    buffers = sum(lc.buffers for lc in layers)
    weights = FLOAT * (params + buffers)
    grads = FLOAT * params
    optim = FLOAT * params * OPTIMIZER_SLOTS[optimizer]
    acts = FLOAT * batch * sum(lc.kept_elems for lc in layers)
    infer = FLOAT * max(prod(lc.in_shape) + lc.out_elems for lc in layers)
    return ModelCost(params=params, buffers=buffers, flops=sum(lc.flops for lc in layers),
                     storage_bytes=weights, int8_storage_bytes=sum(lc.int8_bytes for lc in layers),
                     train_ram_bytes=weights + grads + optim + acts, infer_ram_bytes=infer,
                     weights_bytes=weights, grads_bytes=grads, optimizer_bytes=optim,
                     activations_bytes=acts, batch=batch, optimizer=optimizer, layers=layers)
