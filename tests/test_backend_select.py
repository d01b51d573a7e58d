"""`--backend auto` on a machine where numba is installed but cannot start: Debian armel's
llvmlite aborts the process on an ARMv6 (`LLVM ERROR: ...`), which no `except` catches, so the
backend asks a child process and caches the verdict. Here the child really aborts."""

import json
import os
import subprocess
import sys

import pytest

from edgekd.errors import EdgekdError
from edgekd.kernels import backend

pytest.importorskip("numba")
ABORTS = ("import os, sys; sys.stderr.write('LLVM ERROR: Symbol not found: "
          "__sync_fetch_and_add_4\\n'); sys.stderr.flush(); os.abort()")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(backend, "_verdicts", {})
    monkeypatch.setattr(backend, "_active", None)
    yield tmp_path
    backend._active = None
    backend.select("numpy")


def test_auto_falls_back_to_numpy_with_a_note_when_numba_aborts(fresh, monkeypatch):
    monkeypatch.setattr(backend, "PROBE", ABORTS)
    notes = []
    assert backend.select("auto", log=notes.append).name == "numpy"
    assert len(notes) == 1 and "cannot start" in notes[0] and "__sync_fetch_and_add_4" in notes[0]
    with pytest.raises(EdgekdError, match="cannot start.*--backend numpy"):
        backend.select("numba")
    cached = json.loads((fresh / "edgekd" / "numba-probe.json").read_text())
    assert cached == {backend._probe_key(): [False, notes[0].split("(", 1)[1].rsplit(")", 1)[0]]}


def test_the_verdict_is_cached_on_disk(fresh, monkeypatch):
    monkeypatch.setattr(backend, "PROBE", ABORTS)
    assert backend.numba_status()[0] is False
    monkeypatch.setattr(backend, "_verdicts", {})  # a new process: only the file remains
    monkeypatch.setattr(backend, "PROBE", "raise SystemExit('the probe ran again')")
    assert backend.numba_status() == (False, "LLVM ERROR: Symbol not found: __sync_fetch_and_add_4")


def test_auto_takes_numba_where_it_starts(fresh):
    assert backend.numba_status() == (True, "")
    assert backend.select("auto").name == "numba"


def test_cli_says_why_and_runs_with_numpy(fresh):
    """The CLI with a cached 'cannot start' verdict: a note on stderr, numpy, exit 0."""
    path = fresh / "edgekd" / "numba-probe.json"
    path.parent.mkdir(parents=True)
    key = backend._probe_key()
    path.write_text(json.dumps({key: [False, "LLVM ERROR: Symbol not found: __sync_fetch_and_add_4"]}))
    p = subprocess.run([sys.executable, "-m", "edgekd", "profile", "--json", "--seconds", "0.05", "--backend", "auto"],
                       capture_output=True, text=True, env={**os.environ, "XDG_CACHE_HOME": str(fresh)},
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert "numba is installed but cannot start on this machine (LLVM ERROR" in p.stderr
    assert "using the numpy backend" in p.stderr and "Traceback" not in p.stderr
