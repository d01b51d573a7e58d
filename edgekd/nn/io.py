"""Models on disk: one .npz holding the spec (JSON text), metadata and every array; no pickle."""

import json
import zipfile

import numpy as np

from ..errors import EdgekdError
from ..fileio import atomic_path
from .model import Sequential

FORMAT = 1


def save_model(path, model, meta=None, extra=None):
    """Write atomically. `extra` adds arrays (e.g. optimizer state in a checkpoint)."""
    arrays = {"edgekd_format": np.array(FORMAT, np.int32),
              "spec": np.array(json.dumps(model.spec)),
              "meta": np.array(json.dumps(meta or {}))}
    arrays.update(model.state())
    arrays.update(extra or {})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def read_npz(path):
    """All arrays of an .npz as a dict, with one-line errors for missing, truncated or foreign
    files. Object arrays are refused (allow_pickle=False)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise EdgekdError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise EdgekdError(f"{path}: is a directory, expected an .npz file") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise EdgekdError(f"{path}: holds pickled objects, which edgekd never loads") from None
        raise EdgekdError(f"{path}: not a readable .npz file ({e})") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise EdgekdError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None


def load_model(path, seed=0):
    """Returns (model, meta, arrays); arrays lets a checkpoint read its extra state."""
    arrays = read_npz(path)
    if "spec" not in arrays or "edgekd_format" not in arrays:
        raise EdgekdError(f"{path}: not an edgekd model (no spec inside)")
    version = int(arrays["edgekd_format"])
    if version != FORMAT:
        raise EdgekdError(f"{path}: model format {version} is not supported (this edgekd reads {FORMAT})")
    try:
        spec = json.loads(str(arrays["spec"]))
        meta = json.loads(str(arrays.get("meta", "{}")))
    except json.JSONDecodeError as e:
        raise EdgekdError(f"{path}: its spec is not valid JSON: {e}") from None
    model = Sequential(spec, seed=seed, where=str(path))
    model.load_state(arrays, where=str(path))
    return model, meta, arrays
