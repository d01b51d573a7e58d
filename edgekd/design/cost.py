"""Analytic cost model of a student spec: params, FLOPs, storage, training and inference RAM.

Everything is computed from shapes; no weight array is allocated (the spec is validated
with `build_layers(allocate=False)` once, unless the caller already knows it is valid, as the
designer does for the candidates it derives from a validated teacher).

FLOP conventions (one sample, inference):
  * a multiply-add is 2 FLOPs: dense 2*in*units, convolution 2*kh*kw*cin*filters per
    output position;
  * bias add: 1 FLOP per output element; a fused activation other than 'none':
    1 FLOP per output element;
  * max / average pooling: 1 FLOP per window element read (ph*pw per output element);
    global average pooling: 1 FLOP per input element;
  * batchnorm: 2 FLOPs per element (scale and shift, running stats folded);
  * flatten and dropout: 0 (a reshape, and the identity at inference).
A training step costs about 3x the forward FLOPs (forward, input gradient, weight
gradient): `ModelCost.train_flops_per_sample`.

Memory conventions (float32 = 4 bytes):
  * storage_bytes: 4 per trainable param + 4 per batchnorm running statistic;
  * int8_storage_bytes: as TFLite int8 stores them, 1 byte per kernel weight + 4 per bias
    (int32); batchnorm is folded into the layer before by export and costs nothing;
    per-channel quantization scales and the flatbuffer overhead are not counted;
  * train_ram_bytes = weights (params + buffers) + grads (params) + optimizer state
    (sgd/nesterov: 1 slot per param, adam/adamw: 2) + activations of one batch: for every
    layer its input and output elements x batch (a conservative figure that also covers the
    gradient arrays alive during backward), plus for conv layers the im2col matrix the
    numpy kernel materialises and keeps (kh*kw*cin*Ho*Wo per sample); flatten is a view
    and counts nothing. Interpreter / Python overhead is not included.
  * infer_ram_bytes: the largest input + output pair of any layer for one sample, a lower
    bound for a TFLM tensor arena.
"""

from dataclasses import dataclass, field
from math import prod

from ..errors import EdgekdError
from ..kernels.conv import out_size, same_padding
from ..nn.layers import REGISTRY
from ..nn.spec import build_layers

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


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _conv(cfg, in_shape, one_d):
    cin = in_shape[-1]
    if one_d:
        (kh, kw), (sh, sw), (h, w) = (1, cfg["kernel_size"]), (1, cfg["stride"]), (1, in_shape[0])
    else:
        (kh, kw), (sh, sw), (h, w) = _pair(cfg["kernel_size"]), _pair(cfg["stride"]), in_shape[:2]
    if cfg["padding"] == "same":
        h += sum(same_padding(h, kh, sh))
        w += sum(same_padding(w, kw, sw))
    ho, wo = out_size(h, kh, sh), out_size(w, kw, sw)
    f = cfg["filters"]
    pos = ho * wo
    weights = kh * kw * cin * f
    out_shape = (wo, f) if one_d else (ho, wo, f)
    flops = 2 * weights * pos + f * pos + (f * pos if cfg["activation"] != "none" else 0)
    cols = kh * kw * cin * pos
    return out_shape, weights + f, 0, flops, cols, weights + 4 * f


def _pool(cfg, in_shape, one_d):
    if one_d:
        p = cfg["pool_size"]
        s = cfg["stride"] if cfg["stride"] is not None else p
        (ph, pw), (sh, sw), (h, w) = (1, p), (1, s), (1, in_shape[0])
    else:
        ph, pw = _pair(cfg["pool_size"])
        sh, sw = _pair(cfg["stride"]) if cfg["stride"] is not None else (ph, pw)
        h, w = in_shape[:2]
    ho, wo = (h - ph) // sh + 1, (w - pw) // sw + 1
    c = in_shape[-1]
    out_shape = (wo, c) if one_d else (ho, wo, c)
    return out_shape, 0, 0, ho * wo * c * ph * pw, 0, 0


def _layer(kind, cfg, in_shape):
    """(out_shape, params, buffers, flops, extra kept elements, int8 bytes) of one layer."""
    n_in = prod(in_shape)
    if kind == "dense":
        u = cfg["units"]
        act = u if cfg["activation"] != "none" else 0
        return (u,), n_in * u + u, 0, 2 * n_in * u + u + act, 0, n_in * u + 4 * u
    if kind in ("conv1d", "conv2d"):
        return _conv(cfg, in_shape, kind == "conv1d")
    if kind in ("maxpool1d", "avgpool1d", "maxpool2d"):
        return _pool(cfg, in_shape, kind.endswith("1d"))
    if kind == "global_avgpool":
        return (in_shape[-1],), 0, 0, n_in, 0, 0
    if kind == "flatten":
        return (n_in,), 0, 0, 0, 0, 0
    if kind == "dropout":
        return in_shape, 0, 0, 0, 0, 0
    if kind == "batchnorm":
        c = in_shape[-1]
        return in_shape, 2 * c, 2 * c, 2 * n_in, 0, 0
    raise EdgekdError(f"the cost model does not know layer type {kind!r}")  # pragma: no cover


def layer_costs(spec):
    """Per-layer costs of a spec that is known to be valid (see `model_cost`)."""
    shape = tuple(spec["input_shape"])
    out = []
    for i, entry in enumerate(spec["layers"]):
        kind = entry["type"]
        cfg = {k: entry.get(k, d) for k, d in REGISTRY[kind].options.items()}
        out_shape, params, buffers, flops, cols, int8 = _layer(kind, cfg, shape)
        n_in, n_out = prod(shape), prod(out_shape)
        kept = 0 if kind == "flatten" else n_in + n_out + cols
        out.append(LayerCost(i, kind, shape, tuple(out_shape), params, buffers, flops, n_out,
                             kept, int8))
        shape = tuple(out_shape)
    return out


def model_cost(spec, batch=32, optimizer="adam", validate=True):
    """The cost of `spec` trained at `batch` with `optimizer` (sgd, nesterov, adam, adamw).

    validate=False skips validating (`build_layers` without allocation) for specs already
    known to be valid."""
    check_batch(batch)
    check_optimizer(optimizer)
    if validate:
        build_layers(spec, allocate=False)
    layers = layer_costs(spec)
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
