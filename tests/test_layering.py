"""The import contracts in .importlinter (layers, the trainer/link split, no firmware_bridge in
edgekd, a device path free of teachers, export and host-only packages) hold for the code."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, ".importlinter")


def lint_imports():
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={CONFIG!r}, no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_every_import_contract_is_kept():
    pytest.importorskip("importlinter", reason="import-linter is in the test extra")
    p = lint_imports()
    assert p.returncode == 0, p.stdout + p.stderr
    with open(CONFIG, encoding="utf-8") as f:
        contracts = sum(line.startswith("[importlinter:contract:") for line in f)
    assert contracts == 4 and f"Contracts: {contracts} kept, 0 broken." in p.stdout, p.stdout
