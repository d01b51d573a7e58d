"""Running `edgekd board ...` against a board on a pseudo-terminal, as the board tests do."""

import json
import subprocess
import sys

EDGEKD = [sys.executable, "-m", "edgekd"]


def cli(port, *args, timeout=60):
    """The command as a user runs it; `timeout` turns a hang into a test failure."""
    return subprocess.run(EDGEKD + ["board", *args, "--port", port, "--json"],
                          check=False, capture_output=True, text=True, timeout=timeout)


def ok(port, *args):
    r = cli(port, *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def one_line_error(r, *needles):
    assert r.returncode != 0 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekd: error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
