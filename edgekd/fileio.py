"""Atomic file writes: a reader (or a crash) never sees a half-written file."""

import json
import os
import tempfile
from contextlib import contextmanager

from .errors import EdgekdError


def _umask():
    """The process umask, read without setting it (os.umask would, for a moment, for every
    thread); Linux shows it in /proc, elsewhere the set-and-restore is the only way."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path):
    """Yield a temp path beside `path`; on success fsync it and rename over `path`. The file
    gets the user's umask like any other they write; a missing folder is an error, not made."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise EdgekdError(f"{path}: no such directory {os.path.dirname(path) or '.'}")
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.fchmod(fd, 0o666 & ~_umask())   # mkstemp makes 0600
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(d)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(d):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path, obj):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def append_line(path, obj):
    """Append one JSON line and fsync it (metrics are an append-only log)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def drop_torn_tail(lines):
    """Without a last line that is not JSON: a power cut mid-append leaves one, and the epochs
    before it are intact (each line was fsynced)."""
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    if lines:
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            return lines[:-1]
    return lines
