"""The student spec (JSON): validation and shape inference, shared by trainer, designer, export."""

import json

from .. import limits
from ..errors import EdgekdError
from .init import INITS
from .layers import REGISTRY


def load_spec(path):
    """Read a spec JSON file; one-line errors for missing, unreadable, oversized or invalid
    files."""
    try:
        with open(path, "rb") as f:
            text = f.read(limits.MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise EdgekdError(f"{path}: no such file") from None
    except OSError as e:
        raise EdgekdError(f"{path}: cannot read: {e.strerror or e}") from None
    spec = parse_json(text, str(path))
    check_spec(spec, where=str(path))
    return spec


def parse_json(text, where):
    """JSON text (str or bytes) -> object, refusing oversized or absurdly nested input."""
    if len(text) > limits.MAX_SPEC_BYTES:
        raise EdgekdError(f"{where}: a spec is at most {limits.MAX_SPEC_BYTES:,} bytes of JSON")
    try:
        return json.loads(text)
    except UnicodeDecodeError as e:
        raise EdgekdError(f"{where}: not UTF-8 text: {e}") from None
    except json.JSONDecodeError as e:
        raise EdgekdError(f"{where}: not valid JSON: {e}") from None
    except RecursionError:
        raise EdgekdError(f"{where}: JSON nested too deeply to be a spec") from None


def check_spec(spec, where="spec"):
    """Validate the top level; layer entries are validated when layers are built."""
    if not isinstance(spec, dict):
        raise EdgekdError(f"{where}: a spec is a JSON object with input_shape, num_classes, layers")
    missing = {"input_shape", "num_classes", "layers"} - set(spec)
    if missing:
        raise EdgekdError(f"{where}: missing key(s) {sorted(missing)}")
    shape = spec["input_shape"]
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
        raise EdgekdError(f"{where}: input_shape must be a list of 1-3 positive integers, got {shape!r}")
    n = spec["num_classes"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise EdgekdError(f"{where}: num_classes must be an integer >= 2, got {n!r}")
    if _prod(shape) > limits.MAX_ACTIVATIONS:
        raise EdgekdError(f"{where}: input_shape {shape} has {_prod(shape):,} elements per "
                          f"sample, more than the limit of {limits.MAX_ACTIVATIONS:,}")
    if "init" in spec and spec["init"] not in INITS:
        raise EdgekdError(f"{where}: init must be one of {list(INITS)}, got {spec['init']!r}")
    layers = spec["layers"]
    if not isinstance(layers, list) or not layers:
        raise EdgekdError(f"{where}: layers must be a non-empty list")
    if len(layers) > limits.MAX_LAYERS:
        raise EdgekdError(f"{where}: {len(layers):,} layers, more than the limit of "
                          f"{limits.MAX_LAYERS:,}")
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or "type" not in layer:
            raise EdgekdError(f"{where}: layer {i} must be an object with a 'type'")
        if layer["type"] not in REGISTRY:
            raise EdgekdError(f"{where}: layer {i} has unknown type {layer['type']!r}; "
                              f"known: {', '.join(sorted(REGISTRY))}")


def build_layers(spec, where="spec", allocate=True):
    """Instantiate the layers, threading shapes through; checks the logits width and the
    size limits, then (unless `allocate=False`) allocates the weights."""
    layers = _planned_layers(spec, where, whole=True)
    if allocate:
        for layer in layers:
            layer.allocate()
    return layers


def plan_layers(spec, where="spec", whole=True):
    """The LayerPlan of every layer of `spec`, validated, nothing allocated. `whole=False`
    plans the first layers of a model (their output need not be the logits)."""
    return [layer.plan for layer in _planned_layers(spec, where, whole)]


def _planned_layers(spec, where, whole):
    check_spec(spec, where)
    shape = tuple(spec["input_shape"])
    layers = []
    weights = activations = 0
    for i, cfg in enumerate(spec["layers"]):
        cls = REGISTRY[cfg["type"]]
        if "init" in spec and "init" in cls.options:   # the spec's default, a layer's own wins
            cfg = {"init": spec["init"], **cfg}
        layer = cls(cfg, shape, f"{where}: layer {i}")
        layers.append(layer)
        shape = layer.out_shape
        weights += layer.num_weights()
        activations += _prod(shape)
        if weights > limits.MAX_PARAMS:
            raise EdgekdError(f"{where}: more than {limits.MAX_PARAMS:,} weights by layer {i}; "
                              f"raise the limit with `edgekd --max-params N` if that is meant")
        if activations > limits.MAX_ACTIVATIONS:
            raise EdgekdError(f"{where}: more than {limits.MAX_ACTIVATIONS:,} activation "
                              f"elements per sample by layer {i}")
    if whole and shape != (spec["num_classes"],):
        raise EdgekdError(f"{where}: the last layer must emit [num_classes] = "
                          f"[{spec['num_classes']}] logits, but it emits {list(shape)}")
    return layers


def _prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n
