"""Sequential model: layers from a spec, batched forward/backward, canonical parameter order."""

import hashlib

import numpy as np

from ..kernels.aligned import aligned_empty, aligned_zeros
from .layers.dropout import Dropout
from .program import compiled_forward
from .spec import build_layers


class Sequential:
    def __init__(self, spec, seed=0, where="spec"):
        self.spec = spec
        self.layers = build_layers(spec, where)
        self.input_shape = tuple(spec["input_shape"])
        self.num_classes = spec["num_classes"]
        self.layers[0].need_dx = False
        self._flatten_params()
        self.init(seed)

    def _flatten_params(self):
        """Make every trainable parameter (and its gradient) a view into one float32 vector,
        so an optimizer step is a single pass over one array."""
        pairs = [(layer, k) for layer in self.layers for k in layer.param_order if k in layer.params]
        total = sum(layer.params[k].size for layer, k in pairs)
        self.flat_params = aligned_zeros(total)   # on a cache line: see kernels.aligned
        self.flat_grads = aligned_zeros(total)
        at = 0
        for layer, k in pairs:
            shape, size = layer.params[k].shape, layer.params[k].size
            layer.params[k] = self.flat_params[at:at + size].reshape(shape)
            layer.grads[k] = self.flat_grads[at:at + size].reshape(shape)
            at += size

    def init(self, seed):
        """Draw weights from `seed`; dropout masks come from a second stream of the same seed."""
        weights_rng, self.dropout_rng = (np.random.default_rng(s)
                                         for s in np.random.SeedSequence(seed).spawn(2))
        for layer in self.layers:
            layer.init(weights_rng)
            if isinstance(layer, Dropout):
                layer.rng = self.dropout_rng

    def forward(self, x, training=False):
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, dlogits, input_grad=True):
        """Fills every gradient; returns d(input) if `input_grad` (the trainer needs none)."""
        self.layers[0].need_dx = input_grad
        g = dlogits
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    def loss_buffers(self, n):
        """(grad [n, classes], kl [n]) work arrays for the loss of a batch of n."""
        bufs = self.__dict__.setdefault("_loss_bufs", {})
        if n not in bufs:
            bufs[n] = (aligned_empty((n, self.num_classes)), aligned_empty(n))
        return bufs[n]

    def aligned_batch(self, x, soft):
        """x and soft copied onto arrays kept per batch shape, on cache lines (kernels.aligned),
        so the compiled kernels sum in the same order whatever the heap looked like."""
        bufs = self.__dict__.setdefault("_batch_bufs", {})
        key = (np.shape(x), np.shape(soft))
        if key not in bufs:
            bufs[key] = (aligned_empty(key[0]), aligned_empty(key[1]))
        xa, sa = bufs[key]
        xa[...], sa[...] = x, soft
        return xa, sa

    def predict(self, x, batch=256):
        """Logits for many samples in inference mode, in chunks to bound memory; on the numba
        backend one compiled call per chunk when every layer has a compiled form."""
        compiled = compiled_forward(self)
        if compiled is not None:
            return compiled.predict(x, batch)
        x = np.asarray(x, np.float32)
        out = np.zeros((len(x), self.num_classes), np.float32)
        for i in range(0, len(x), batch):
            out[i:i + batch] = self.forward(x[i:i + batch])
        return out

    def named_params(self):
        """[(name, param, grad)] per parameter in canonical order (views of the flat vectors)."""
        return [(f"layers.{i}.{k}", layer.params[k], layer.grads[k])
                for i, layer in enumerate(self.layers) for k in layer.param_order if k in layer.params]

    def trainables(self):
        """(param, grad) pairs for optimizers: one pair, the flat vectors, in canonical order."""
        return [(self.flat_params, self.flat_grads)]

    def state(self):
        """{'layers.<i>.<name>': array} for params and buffers, in canonical order."""
        return {f"layers.{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.state()}

    def load_state(self, arrays, where="weights"):
        from ..errors import EdgekdError
        for key, dst in self.state().items():
            if key not in arrays:
                raise EdgekdError(f"{where}: missing array {key!r}")
            src = arrays[key]
            if src.dtype.kind not in "fiu":
                raise EdgekdError(f"{where}: {key} has dtype {src.dtype}; weights are real numbers")
            if src.shape != dst.shape:
                raise EdgekdError(f"{where}: {key} has shape {list(src.shape)}, "
                                  f"spec wants {list(dst.shape)}")
            if not np.all(np.isfinite(src)):
                raise EdgekdError(f"{where}: {key} holds NaN or inf")
            dst[...] = src

    def num_params(self):
        return int(self.flat_params.size)

    def weights_sha256(self):
        """SHA-256 of every param and buffer as float32 little-endian C order, in the order of
        `state()`: layer index ascending, then each layer's `param_order`."""
        h = hashlib.sha256()
        for v in self.state().values():
            h.update(np.ascontiguousarray(v, dtype="<f4").tobytes())
        return h.hexdigest()
