"""Shared pieces of the PyTorch oracle tests: float32 torch on one thread, stable per-case
seeds, and one comparison with float32 tolerances (rtol 1e-4, atol 1e-5: numpy and torch sum
in different orders)."""

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(autouse=True)
def torch_float32():
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny tensors: intra-op threads only add sync overhead
    yield
    torch.set_num_threads(threads)


def seed_of(*key):
    """A stable per-case seed (hash() of strings is salted per process)."""
    return zlib.crc32(repr(key).encode())


def check(got, want, name, rtol=RTOL, atol=ATOL):
    want = want.detach().cpu().numpy() if torch.is_tensor(want) else np.asarray(want)
    got = np.asarray(got)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    if got.ndim:  # arrays must stay float32; scalar losses may be Python floats
        assert got.dtype == np.float32, f"{name}: dtype {got.dtype}, expected float32"
    assert np.all(np.isfinite(got)), f"{name}: non-finite values"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
