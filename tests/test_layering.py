"""The import contracts in .importlinter (layers, the trainer/link split, no firmware_bridge in
edgekd, a device path free of teachers, export and host-only packages) hold for the code, and
no function in edgekd/ or firmware_bridge/ is longer than a reader can hold (60 lines)."""

import ast
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


MAX_FUNCTION_LINES = 60


def long_functions(package):
    """(lines, "path::Class.function") of every function in `package` over the limit, nested
    ones included, counted from `def` to its last line; and how many functions were read."""
    found, seen = [], 0
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            todo = [(tree, "")]
            while todo:
                node, prefix = todo.pop()
                for child in ast.iter_child_nodes(node):
                    inner = prefix
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        inner = f"{prefix}{child.name}."
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        seen += 1
                        lines = child.end_lineno - child.lineno + 1
                        if lines > MAX_FUNCTION_LINES:
                            found.append((lines, f"{os.path.relpath(path, ROOT)}::{inner[:-1]}"))
                    todo.append((child, inner))
    return found, seen


@pytest.mark.parametrize("package", ["edgekd", "firmware_bridge"])
def test_no_function_is_longer_than_a_reader_can_hold(package):
    found, seen = long_functions(package)
    assert seen > 50, f"read only {seen} functions in {package}/"
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines: {sorted(found, reverse=True)}"
