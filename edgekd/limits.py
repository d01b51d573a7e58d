"""Size limits checked before memory is spent on a spec, a model file or a data set.

A hostile or mistaken input (a spec with ten million units, a zip-bombed .npz, a header that
claims 400 GiB) must fail with one line while memory stays small, not after the allocator
has tried. The defaults fit any host and every board edgekd targets with room to spare;
`edgekd --max-params N --max-data SIZE ...` (or EDGEKD_MAX_PARAMS, EDGEKD_MAX_DATA) raises
them for the rare model or data set that needs more.
"""

import os

MAX_PARAMS = int(os.environ.get("EDGEKD_MAX_PARAMS", 50_000_000))  # weights + buffers
MAX_ACTIVATIONS = 16_000_000   # activation elements of one sample, summed over layers
MAX_LAYERS = 1_000
MAX_SPEC_BYTES = 1 << 20       # a spec file, or the spec inside a model .npz
MAX_DATA_BYTES = int(os.environ.get("EDGEKD_MAX_DATA", 2 << 30))  # uncompressed .npz members


def set_limits(max_params=None, max_data_bytes=None):
    """Raise (or lower) the limits for this process; None keeps a limit as it is."""
    global MAX_PARAMS, MAX_DATA_BYTES
    if max_params is not None:
        MAX_PARAMS = int(max_params)
    if max_data_bytes is not None:
        MAX_DATA_BYTES = int(max_data_bytes)
