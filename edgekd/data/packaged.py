"""Tables that ship inside the package as gzip-compressed CSV, read through importlib.resources
so they work from a source tree, a wheel or a zip import, with no download and no cache."""

import gzip
import io
from importlib import resources

import numpy as np

from edgekd.errors import EdgekdError


def read_packaged_csv(resource, what, dtype):
    """The rows of `resource` (a .csv.gz beside this module); a damaged install is a one-line
    error naming `what`, not a traceback."""
    where = f"{__package__}/{resource}"
    try:
        raw = gzip.decompress(resources.files(__package__).joinpath(resource).read_bytes())
        return np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=dtype, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise EdgekdError(f"{where}: cannot read the packaged {what} data "
                          f"({' '.join(str(e).split())}); reinstall edgekd") from None
