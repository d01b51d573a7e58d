"""Codecs for what crosses the link: teacher soft labels (logits) and inputs.

Soft labels [n, classes]:
  f32   4 bytes per logit.
  f16   2 bytes per logit.
  topk  per row the k largest logits relative to the row's maximum, as int8 with one float16
        scale per row, plus one int8 "rest" value (the mean of the other logits) that stands
        in for all of them. Shifting a row leaves softmax, KL and argmax unchanged, and the top
        logit is sent exactly (0), so the teacher's argmax survives. One packed record per row:
        idx u8[k] (u16 when classes > 256), q i8[k], rest i8, scale f16 (2k + 3 bytes).
Inputs [n, *shape] (flattened to [n, features]):
  f32, f16 as above.
  u8    per-feature affine q = round((x - lo) / step), x' = lo + q * step, with lo and step
        chosen by the host from the training split and sent once in WELCOME. When a feature
        already lives on a grid of at most 256 evenly spaced values (8-bit data, e.g. digits'
        0..16 / 16), step is that grid's spacing and the round trip is exact.
"""

import numpy as np

from ..errors import EdgekdError

SOFT_CODECS = ("f32", "f16", "topk")
X_CODECS = ("f32", "f16", "u8")


class FloatRows:
    """f32 / f16 arrays, row-major."""

    def __init__(self, width, dtype):
        self.width, self.dtype = width, np.dtype(dtype).newbyteorder("<")

    def nbytes(self, n):
        return n * self.width * self.dtype.itemsize

    def encode(self, a):
        return np.ascontiguousarray(a.reshape(len(a), self.width), dtype=self.dtype).tobytes()

    def decode(self, buf, n):
        return np.frombuffer(buf, self.dtype, n * self.width).reshape(n, self.width).astype(np.float32)


class TopK:
    """Fixed-size row records, so any row can be sliced out (and cached) still encoded."""

    def __init__(self, classes, k):
        if not 1 <= k <= classes:
            raise EdgekdError(f"topk needs 1 <= k <= classes ({classes}), got k={k}")
        self.classes, self.k = classes, k
        idx = "<u1" if classes <= 256 else "<u2"
        self.row = np.dtype([("idx", idx, (k,)), ("q", "i1", (k,)), ("rest", "i1"), ("scale", "<f2")])

    def nbytes(self, n):
        return n * self.row.itemsize

    def encode(self, soft):
        n, k = len(soft), self.k
        rel = soft - soft.max(axis=1, keepdims=True)
        idx = np.argsort(-rel, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(rel, idx, axis=1)
        rest_count = self.classes - k
        rest = ((rel.sum(axis=1) - top.sum(axis=1)) / rest_count) if rest_count else np.zeros(n, np.float32)
        span = np.maximum(np.abs(top).max(axis=1), np.abs(rest))
        f16 = np.finfo(np.float16)  # beyond 127 * f16.max the row saturates, still decodable
        scale = np.clip(np.where(span > 0, span / 127.0, 1.0), f16.tiny, f16.max).astype(np.float16)
        s = scale.astype(np.float32)
        rec = np.zeros(n, self.row)
        rec["idx"] = idx
        # only values equal to the maximum may quantize to 0: a near-tie cannot steal the argmax
        q = np.clip(np.round(top / s[:, None]), -127, 127)
        q = np.where(top < 0, np.minimum(q, -1), q)
        r = np.clip(np.round(rest / s), -127, 127)
        rec["q"] = q
        rec["rest"] = np.where(rest < 0, np.minimum(r, -1), r)
        rec["scale"] = scale
        return rec.tobytes()

    def decode(self, buf, n):
        rec = np.frombuffer(buf, self.row, n)
        idx = rec["idx"].astype(np.int64).reshape(n, self.k)
        scale = rec["scale"].astype(np.float32)
        if idx.size and idx.max() >= self.classes:
            raise EdgekdError(f"topk soft label names class {idx.max()} of {self.classes}")
        if not np.all(np.isfinite(scale)):
            raise EdgekdError("topk soft label has a non-finite scale")
        out = np.repeat((rec["rest"].astype(np.float32) * scale)[:, None], self.classes, axis=1)
        np.put_along_axis(out, idx, rec["q"].astype(np.float32).reshape(n, self.k) * scale[:, None], axis=1)
        return out


class Affine8:
    """u8 inputs with per-feature lo/step (see module docstring)."""

    def __init__(self, lo, step):
        self.lo = np.asarray(lo, np.float32)
        self.step = np.asarray(step, np.float32)
        self.width = self.lo.size

    def nbytes(self, n):
        return n * self.width

    def encode(self, x):
        q = np.round((x.reshape(len(x), self.width) - self.lo) / self.step)
        return np.clip(q, 0, 255).astype(np.uint8).tobytes()

    def decode(self, buf, n):
        q = np.frombuffer(buf, np.uint8, n * self.width).reshape(n, self.width)
        return (self.lo + q.astype(np.float32) * self.step).astype(np.float32)


def affine8_params(x):
    """(lo, step) per feature for the u8 codec: an exact grid when the data has one."""
    x = x.reshape(len(x), -1).astype(np.float32)
    lo, hi = x.min(axis=0), x.max(axis=0)
    step = np.where(hi > lo, (hi - lo) / 255.0, 1.0).astype(np.float32)
    for f in range(x.shape[1]):
        u = np.unique(x[:, f])
        if 1 < len(u) <= 256:
            step[f] = _grid_step(u, step[f])
    return lo, step


def _grid_step(u, fallback):
    """The spacing of an evenly spaced grid holding the sorted values `u` (gaps allowed: the
    smallest difference divided by 1..8), if it has at most 256 points; else `fallback`."""
    smallest = np.diff(u).min()
    for div in range(1, 9):
        grid = smallest / div
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            k = (u - u[0]) / grid
        if np.all(np.isfinite(k)) and k.max() <= 255 and np.allclose(k, np.round(k), atol=1e-3):
            return np.float32(grid)
    return fallback


class RowCodec:
    """One training row as the link carried it, inputs then soft label, still encoded: what a
    device keeps of a streamed sample, decoded only when the sample is replayed."""

    def __init__(self, xc, sc, input_shape):
        self.xc, self.sc, self.shape = xc, sc, tuple(input_shape)
        self.x_bytes = xc.nbytes(1)
        self.nbytes = self.x_bytes + sc.nbytes(1)

    def decode(self, rows):
        """(x [n, *input_shape], soft [n, classes]) float32 from uint8 rows [n, nbytes]."""
        n = len(rows)
        x = self.xc.decode(np.ascontiguousarray(rows[:, :self.x_bytes]).tobytes(), n)
        soft = self.sc.decode(np.ascontiguousarray(rows[:, self.x_bytes:]).tobytes(), n)
        return x.reshape((n,) + self.shape), soft


def soft_codec(name, classes, k=4):
    if name == "f32":
        return FloatRows(classes, "f4")
    if name == "f16":
        return FloatRows(classes, "f2")
    if name == "topk":
        return TopK(classes, min(k, classes))
    raise EdgekdError(f"unknown soft-label codec {name!r}; choose from {', '.join(SOFT_CODECS)}")


def x_codec(name, features, affine=None):
    if name == "f32":
        return FloatRows(features, "f4")
    if name == "f16":
        return FloatRows(features, "f2")
    if name == "u8":
        if affine is None:
            raise EdgekdError("the u8 input codec needs the host's per-feature scale")
        return Affine8(*affine)
    raise EdgekdError(f"unknown input codec {name!r}; choose from {', '.join(X_CODECS)}")
