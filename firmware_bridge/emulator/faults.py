"""Injected faults for tests: frames lost or damaged on the wire (both directions) and
flash writes that come out wrong, at given rates, reproducibly from a seed."""

import numpy as np


class Faults:
    def __init__(self, drop_rate=0.0, corrupt_rate=0.0, flash_error_rate=0.0, seed=0):
        self.drop_rate, self.corrupt_rate = drop_rate, corrupt_rate
        self.flash_error_rate = flash_error_rate
        self.rng = np.random.default_rng(seed)

    def any(self):
        return bool(self.drop_rate or self.corrupt_rate or self.flash_error_rate)

    def drop(self):
        return bool(self.drop_rate) and self.rng.random() < self.drop_rate

    def corrupt(self, data):
        """Frame bytes on the wire, or a copy with one bit flipped."""
        return self._flip(data, self.corrupt_rate)

    def flash_write(self, data):
        """What a flash write stored: data, or a copy with one bit flipped."""
        return self._flip(data, self.flash_error_rate)

    def _flip(self, data, rate):
        if not data or not rate or self.rng.random() >= rate:
            return data
        b = bytearray(data)
        i = int(self.rng.integers(len(b)))
        b[i] ^= 1 << int(self.rng.integers(8))
        return bytes(b)
