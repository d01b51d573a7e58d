"""Built-in `sensor`: synthetic 3-axis accelerometer windows for conv1d students.

Why synthetic: a real activity-recognition set is large and licence-bound; this one is
generated in milliseconds, identical on every machine, and shaped like the device-data
case the project targets (a board logging its own IMU).

Generator. Each sample is a window of 64 steps at 25 Hz (about 2.6 s) on 3 axes, in g,
x shape [N, 64, 3] channels-last. For every sample:

1. Pick the class's step frequency f0 (Hz) and amplitude A (g) from class ranges, plus a
   small per-sample chirp, so the frequency drifts within the window.
2. The vertical signal is A * sum_h w_h sin(2 pi h f0 t + phi_h) with the class's harmonic
   weights w_h and random phases; `jump` is instead a train of Gaussian impact pulses
   (push-off and landing) at the jump rate. A lateral sway at f0 / 2 (the left/right step
   alternation) and a forward component complete the motion in the body frame. Sway,
   forward and higher-harmonic weights are each scaled by a per-sample factor in
   [0.5, 1.5] (JITTER), which blurs the class signatures into one another.
3. Gravity (1 g) is added on the vertical axis, then the whole window is rotated by a
   random tilt (how the board sits on the body), which mixes gravity and motion across
   axes and moves the per-axis offsets.
4. Gaussian noise of a per-sample level is added.

Classes (label: name, f0 Hz, A g): 0 idle 0.2-0.8, 0.01-0.12 (slow postural sway);
1 walk 1.4-2.2, 0.15-0.45; 2 run 2.2-3.2, 0.45-1.1; 3 stairs 1.2-2.0, 0.2-0.5 with a
stronger second harmonic, more forward motion and a larger tilt; 4 jump 0.8-1.6,
pulses of 0.6-1.6. The ranges overlap on purpose (walk/stairs, walk/run, run/jump), so
a small conv1d scores well but not perfectly (measured with PyTorch, Adam, 60 epochs:
a conv1d with 8 and 16 filters about 90% test, a 64-128-128 filter net about 97%).
Train (seed 0) and test (seed 1) are drawn independently, balanced, 400 and 100
samples per class, rows shuffled.
"""

from typing import NamedTuple

import numpy as np

from edgekd.data.datasets import Dataset

NAME = "sensor"
CLASSES = ("idle", "walk", "run", "stairs", "jump")
LENGTH = 64
RATE_HZ = 25.0
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
TRAIN_SEED = 0
TEST_SEED = 1
JITTER = 0.5


class _Profile(NamedTuple):
    """One class's generative signature; ranges are (low, high) for a uniform draw."""

    f0: tuple  # step frequency, Hz
    amp: tuple  # vertical amplitude, g
    harm: tuple | None  # harmonic weights of the vertical signal; None: jump pulses
    sway: float  # lateral sway at f0 / 2, relative to amp
    fwd: float  # forward motion, relative to amp
    tilt: float  # max tilt of the board on the body, radians
    noise: tuple  # sensor noise std, g


_PROFILES = {
    "idle": _Profile((0.2, 0.8), (0.01, 0.12), (1.0,), 0.8, 0.8, 0.6, (0.01, 0.05)),
    "walk": _Profile((1.4, 2.2), (0.15, 0.45), (1.0, 0.35, 0.1), 0.4, 0.3, 0.35, (0.02, 0.08)),
    "run": _Profile((2.2, 3.2), (0.45, 1.1), (1.0, 0.45, 0.2), 0.3, 0.35, 0.35, (0.03, 0.12)),
    "stairs": _Profile((1.2, 2.0), (0.2, 0.5), (1.0, 0.6, 0.25), 0.35, 0.6, 0.55, (0.02, 0.08)),
    "jump": _Profile((0.8, 1.6), (0.6, 1.6), None, 0.15, 0.2, 0.35, (0.03, 0.12)),
}


def load_sensor():
    """Return the synthetic sensor set: x [N, 64, 3] float32 in g, 5 balanced classes."""
    x_train, y_train = generate(TRAIN_PER_CLASS, TRAIN_SEED)
    x_test, y_test = generate(TEST_PER_CLASS, TEST_SEED)
    return Dataset(NAME, x_train, y_train, x_test, y_test, num_classes=len(CLASSES))


def generate(per_class, seed):
    """Draw `per_class` windows of every class from one seeded RNG, rows shuffled."""
    rng = np.random.default_rng(seed)
    t = np.arange(LENGTH, dtype=np.float64) / RATE_HZ
    xs = [_windows(_PROFILES[name], per_class, t, rng) for name in CLASSES]
    x = np.concatenate(xs)
    y = np.repeat(np.arange(len(CLASSES), dtype=np.int64), per_class)
    order = rng.permutation(len(y))
    return np.ascontiguousarray(x[order], dtype=np.float32), y[order]


def _uniform(rng, bounds, n):
    return rng.uniform(bounds[0], bounds[1], size=(n, 1))


def _windows(p, n, t, rng):
    """n windows [n, LENGTH, 3] of one class profile, in g."""
    f0 = _uniform(rng, p.f0, n)
    amp = _uniform(rng, p.amp, n)
    chirp = rng.uniform(-0.15, 0.15, size=(n, 1)) * f0 / t[-1]  # drift up to 15% per window
    phase = 2 * np.pi * (f0 * t + 0.5 * chirp * t * t)  # [n, L] cycles of the step rhythm
    if p.harm is None:
        vertical = amp * _pulses(phase, rng)
    else:
        vertical = amp * _harmonics(phase, p.harm, rng)
    sway_phase = 0.5 * phase + rng.uniform(0, 2 * np.pi, (n, 1))
    sway = p.sway * _jitter(rng, n) * amp * np.sin(sway_phase)
    forward = p.fwd * _jitter(rng, n) * amp * _harmonics(phase, (1.0, 0.5), rng)
    body = np.stack([forward, sway, vertical + 1.0], axis=-1)  # +1 g gravity on z
    tilted = np.einsum("nij,nlj->nli", _tilts(n, p.tilt, rng), body)
    noise = _uniform(rng, p.noise, n)[:, :, None] * rng.standard_normal(tilted.shape)
    return tilted + noise


def _harmonics(phase, weights, rng):
    """Sum of harmonics of the step phase, each with its own random phase offset."""
    out = np.zeros_like(phase)
    for h, w in enumerate(weights, start=1):
        w = w * (_jitter(rng, len(phase)) if h > 1 else 1.0)
        out += w * np.sin(h * phase + rng.uniform(0, 2 * np.pi, (len(phase), 1)))
    return out


def _jitter(rng, n):
    """Per-sample factor in [1 - JITTER, 1 + JITTER]: blurs the class signatures."""
    return rng.uniform(1 - JITTER, 1 + JITTER, size=(n, 1))


def _pulses(phase, rng):
    """Jump impacts: a push-off then a sharper landing pulse once per cycle."""
    cyc = np.mod(phase / (2 * np.pi) + rng.uniform(0, 1, (len(phase), 1)), 1.0)
    push = np.exp(-0.5 * ((cyc - 0.25) / 0.07) ** 2)
    land = np.exp(-0.5 * ((cyc - 0.75) / 0.04) ** 2)
    return 0.6 * push + 1.0 * land - 0.25  # mean near 0; free-flight dip between pulses


def _tilts(n, max_angle, rng):
    """n rotation matrices about random horizontal axes by up to max_angle (Rodrigues)."""
    theta = rng.uniform(0, max_angle, n)
    azimuth = rng.uniform(0, 2 * np.pi, n)
    k = np.stack([np.cos(azimuth), np.sin(azimuth), np.zeros(n)], axis=-1)
    kx = np.zeros((n, 3, 3))
    kx[:, 0, 2], kx[:, 1, 2] = k[:, 1], -k[:, 0]
    kx[:, 2, 0], kx[:, 2, 1] = -k[:, 1], k[:, 0]
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3) + s * kx + (1 - c) * (kx @ kx)
