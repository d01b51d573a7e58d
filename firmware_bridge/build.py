"""Builds the reference C firmware for this host with gcc (or $CC): the board code plus
host/main_host.c, whose HAL is a pseudo-terminal. `python -m firmware_bridge.build -o DIR`
does it from a shell; `edgekd board firmware` too."""

import argparse
import hashlib
import os
import shutil
import subprocess

from edgekd.errors import EdgekdError

FIRMWARE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "firmware")
SOURCES = ("board.c", "cobs.c", "crc32.c", "sha256.c", "ekb_model.c", "host/main_host.c")
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror")


def _define_args(defines):
    args = []
    for key, value in sorted((defines or {}).items()):
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        args.append(f"-D{key}={value}")
    return args


def build_firmware(out_dir, defines=None, cc=None):
    """Compile the host firmware into out_dir; returns the executable's path. The name
    carries a hash of the sources and flags, so an unchanged build is reused."""
    cc = cc or os.environ.get("CC") or "gcc"
    if shutil.which(cc) is None:
        raise EdgekdError(f"cannot build the firmware: C compiler {cc!r} not found (set CC)")
    args = list(CFLAGS) + _define_args(defines)
    h = hashlib.sha256(" ".join([cc] + args).encode())
    for name in sorted(os.listdir(FIRMWARE_DIR)) + list(SOURCES):
        path = os.path.join(FIRMWARE_DIR, name)
        if os.path.isfile(path) and name.endswith((".c", ".h")):
            with open(path, "rb") as f:
                h.update(name.encode() + f.read())
    os.makedirs(out_dir, exist_ok=True)
    exe = os.path.join(out_dir, f"edgekd-firmware-{h.hexdigest()[:12]}")
    if os.path.exists(exe):
        return exe
    tmp = f"{exe}.tmp{os.getpid()}"
    cmd = [cc, *args, "-o", tmp, *(os.path.join(FIRMWARE_DIR, s) for s in SOURCES), "-lm"]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if res.returncode != 0:
        first = (res.stderr.strip().splitlines() or ["(no output)"])[0]
        raise EdgekdError(f"firmware build failed ({cc} exit {res.returncode}): {first}")
    os.replace(tmp, exe)
    return exe


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-o", "--out", default="build", help="output directory")
    ap.add_argument("-D", dest="defines", action="append", default=[],
                    help="NAME=VALUE, e.g. EKB_MODEL_SLOT=32768 (see firmware/ekb_config.h)")
    a = ap.parse_args(argv)
    defines = dict(d.split("=", 1) if "=" in d else (d, 1) for d in a.defines)
    print(build_firmware(a.out, defines))


if __name__ == "__main__":
    main()
