"""Reading .npz archives safely: sizes from the zip directory and each member's .npy header
are checked before anything is decompressed, so a zip bomb, a header claiming 400 GiB or a
pickled object costs no memory and gets one line. Only the members asked for are read."""

import os
import zipfile
import zlib

import numpy as np

from . import limits
from .errors import EdgekdError

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError,
            NotImplementedError)


def _fail(path, message):
    raise EdgekdError(f"{path}: {message}")


def open_npz(path, what="an .npz archive"):
    """An open ZipFile of `path` and its members {name without .npy: ZipInfo}."""
    path = os.fspath(path)
    if os.path.isdir(path):
        _fail(path, f"is a directory; expected {what}")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        _fail(path, "no such file")
    except OSError as e:
        _fail(path, f"cannot read file: {e.strerror or e}")
    if head not in _ZIP_MAGIC:
        _fail(path, f"not an .npz archive (no zip header); expected {what}")
    try:
        zf = zipfile.ZipFile(path)
        members = {}
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            members[name] = info
        return zf, members
    except _DAMAGED as e:
        _fail(path, f"damaged .npz archive: {_one_line(e)}")


def member_header(zf, info, path, key):
    """(shape, dtype) from a member's .npy header, checked against the member's size."""
    try:
        with zf.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(fp)
            header = fp.tell()
    except _DAMAGED as e:
        _fail(path, f"array '{key}' has no valid .npy header: {_one_line(e)}")
    if dtype.hasobject:
        _fail(path, f"array '{key}' holds Python objects (pickle), which edgekd never loads")
    claimed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if dtype.itemsize else 0
    if claimed != info.file_size - header:
        _fail(path, f"array '{key}' claims shape {list(shape)} ({claimed:,} bytes) but the "
                    f"archive holds {max(info.file_size - header, 0):,}")
    return tuple(shape), dtype


def read_npz(path, keys=None, optional=(), only=False, max_bytes=None, what="an .npz archive"):
    """{key: array} for `keys` (all members if None) plus those of `optional` present.

    Missing keys, members beyond keys+optional when `only`, object arrays and a total above
    `max_bytes` (default: the data limit) are one-line errors, all decided before reading."""
    zf, members = open_npz(path, what)
    with zf:
        keys = list(members) if keys is None else list(keys)
        missing = [k for k in keys if k not in members]
        if missing:
            _fail(path, f"missing array '{missing[0]}'; expected {what}")
        wanted = keys + [k for k in optional if k in members and k not in keys]
        if only:
            extra = sorted(set(members) - set(wanted))
            if extra:
                _fail(path, f"unexpected member '{extra[0]}'; expected {what} and nothing else")
        limit = limits.MAX_DATA_BYTES if max_bytes is None else max_bytes
        total = sum(members[k].file_size for k in wanted)
        if total > limit:
            _fail(path, f"its arrays hold {total:,} bytes uncompressed, more than the limit of "
                        f"{limit:,} (raise it with `edgekd --max-data SIZE`)")
        for k in wanted:
            member_header(zf, members[k], path, k)
            _check_ratio(members[k], path, k)
        out = {}
        for k in wanted:
            try:
                with zf.open(members[k]) as fp:
                    out[k] = np.lib.format.read_array(fp, allow_pickle=False)
            except MemoryError:
                _fail(path, f"array '{k}' does not fit in memory")
            except _DAMAGED as e:
                _fail(path, f"array '{k}' cannot be read (damaged archive): {_one_line(e)}")
        return out


def read_npy(path, max_bytes=None):
    """A plain .npy array, its header checked against the file's size and the data limit
    before the data is read (a header claiming 400 GiB gets one line, not a MemoryError)."""
    path = os.fspath(path)
    limit = limits.MAX_DATA_BYTES if max_bytes is None else max_bytes
    try:
        with open(path, "rb") as fp:
            version = np.lib.format.read_magic(fp)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(fp)
            if dtype.hasobject:
                _fail(path, "holds Python objects (pickle), which edgekd never loads")
            claimed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            held = os.fstat(fp.fileno()).st_size - fp.tell()
            if claimed != held:
                _fail(path, f"claims shape {list(shape)} ({claimed:,} bytes) but the file holds "
                            f"{max(held, 0):,}")
            if claimed > limit:
                _fail(path, f"holds {claimed:,} bytes, more than the limit of {limit:,} (raise "
                            f"it with `edgekd --max-data SIZE`)")
            fp.seek(0)
            return np.lib.format.read_array(fp, allow_pickle=False)
    except MemoryError:
        _fail(path, "does not fit in memory")
    except _DAMAGED as e:
        _fail(path, f"not a valid .npy file: {_one_line(e)}")


BOMB_RATIO = 200            # real arrays deflate far less (images 3-10x)
BOMB_MIN_BYTES = 64 << 20  # small members may be all zeros; they cannot hurt


def _check_ratio(info, path, key):
    """A large member that deflates by more than BOMB_RATIO is a zip bomb, not data."""
    if info.file_size > BOMB_MIN_BYTES and info.file_size > BOMB_RATIO * max(info.compress_size, 1):
        _fail(path, f"array '{key}' would expand {info.compress_size:,} bytes to "
                    f"{info.file_size:,} (over {BOMB_RATIO}x): refused as a zip bomb")


def _one_line(e):
    text = " ".join(str(e).split())
    return text or type(e).__name__
