"""Test doubles shared by the link tests: an in-memory byte stream and a linear teacher."""

import io

import numpy as np

from edgekd.link.frames import FramingError


class Eof(FramingError):
    """The test stream ran dry (a real transport raises LinkDown)."""


class Stream:
    """A byte stream with read_frame's `read_exact(n)` contract; records every request so
    allocations can be bounded."""

    def __init__(self, data):
        self.buf, self.requests = io.BytesIO(bytes(data)), []

    def read_exact(self, n):
        self.requests.append(n)
        got = self.buf.read(n)
        if len(got) != n:
            raise Eof(f"end of stream: wanted {n} bytes, {len(got)} left")
        return got


class StubTeacher:
    """A fixed linear map from digits' 64 features to 10 logits."""
    num_classes, input_shape = 10, (64,)
    w = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32) * 3

    def logits(self, x):
        return np.asarray(x, np.float32).reshape(len(x), -1) @ self.w


# a strong shared token (the host refuses tokens under 128 bits unless --weak-token)
TOKEN = "k7Rw2pQz9XvB4mNc8LsT1hYd6FgJ3aUe5WqZ0rVbKx"
