"""Models on disk: one .npz holding the spec (JSON text), metadata and every array; no pickle."""

import json

import numpy as np

from ..errors import EdgekdError
from ..fileio import atomic_path
from .model import Sequential

FORMAT = 1


def save_model(path, model, meta=None, extra=None, state=None):
    """Write atomically. `extra` adds arrays (e.g. optimizer state in a checkpoint); `state`
    stores other weights for the model's spec (e.g. the best epoch's) instead of its own."""
    arrays = {"edgekd_format": np.array(FORMAT, np.int32),
              "spec": np.array(json.dumps(model.spec)),
              "meta": np.array(json.dumps(meta or {}))}
    arrays.update(model.state() if state is None else state)
    arrays.update(extra or {})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


HEADER = ("edgekd_format", "spec", "meta")
WHAT = "an edgekd model .npz (from `edgekd teacher`, `edgekd train` or `edgekd board weights`)"


def read_npz(path, keys=None):
    """Arrays of an edgekd .npz (all, or `keys`), read with every size checked first."""
    from ..npzfile import read_npz as read
    return read(path, keys, what=WHAT)


def load_model(path, seed=0, extra=False):
    """Returns (model, meta, arrays); arrays lets a checkpoint read its extra state. Only the
    members the spec names are read (and no others may be present) unless `extra`, so a
    model file costs the memory its spec says, whatever its archive claims."""
    from .. import limits
    from ..npzfile import read_npz as read
    from .spec import parse_json
    head = read(path, ["edgekd_format", "spec"], optional=["meta"], what=WHAT,
                max_bytes=3 * limits.MAX_SPEC_BYTES)
    fmt = head["edgekd_format"]
    if fmt.shape != () or fmt.dtype.kind not in "iu":
        raise EdgekdError(f"{path}: not an edgekd model (its format number is not an integer)")
    if int(fmt) != FORMAT:
        raise EdgekdError(f"{path}: model format {int(fmt)} is not supported (this edgekd reads {FORMAT})")
    spec = parse_json(_text(head["spec"], path, "spec"), f"{path}: spec")
    meta = parse_json(_text(head.get("meta", np.array("{}")), path, "meta"), f"{path}: meta")
    model = Sequential(spec, seed=seed, where=str(path))
    names = list(model.state())
    if extra:
        arrays = read(path, what=WHAT)
    else:
        weights = sum(v.nbytes for v in model.state().values())
        arrays = read(path, names, optional=HEADER, only=True, what=WHAT,
                      max_bytes=8 * weights + 3 * limits.MAX_SPEC_BYTES)
    model.load_state(arrays, where=str(path))
    return model, meta, arrays


def _text(a, path, key):
    if a.shape != () or a.dtype.kind not in "US":
        raise EdgekdError(f"{path}: '{key}' is not a JSON text member")
    return str(a)
