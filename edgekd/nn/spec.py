"""The student spec (JSON): validation and shape inference, shared by trainer, designer, export."""

import json

from ..errors import EdgekdError
from .layers import REGISTRY


def load_spec(path):
    """Read a spec JSON file; one-line errors for missing, unreadable or invalid files."""
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise EdgekdError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EdgekdError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise EdgekdError(f"{path}: not valid JSON: {e}") from None
    check_spec(spec, where=str(path))
    return spec


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
    layers = spec["layers"]
    if not isinstance(layers, list) or not layers:
        raise EdgekdError(f"{where}: layers must be a non-empty list")
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or "type" not in layer:
            raise EdgekdError(f"{where}: layer {i} must be an object with a 'type'")
        if layer["type"] not in REGISTRY:
            raise EdgekdError(f"{where}: layer {i} has unknown type {layer['type']!r}; "
                              f"known: {', '.join(sorted(REGISTRY))}")


def build_layers(spec, where="spec"):
    """Instantiate the layers, threading shapes through; checks the logits width at the end."""
    check_spec(spec, where)
    shape = tuple(spec["input_shape"])
    layers = []
    for i, cfg in enumerate(spec["layers"]):
        layer = REGISTRY[cfg["type"]](cfg, shape, f"{where}: layer {i}")
        layers.append(layer)
        shape = layer.out_shape
    if shape != (spec["num_classes"],):
        raise EdgekdError(f"{where}: the last layer must emit [num_classes] = "
                          f"[{spec['num_classes']}] logits, but it emits {list(shape)}")
    return layers
