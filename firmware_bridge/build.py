"""Builds the reference C firmware: for this host with gcc (or $CC), the board code plus
host/main_host.c, whose HAL is a pseudo-terminal; or for an MPS2 Cortex-M board (QEMU's
mps2-an386, a Cortex-M4F, hard float; mps2-an385, a Cortex-M3, soft float) with Debian's
arm-none-eabi-gcc and newlib-nano, plus ports/mps2/ (startup, UART HAL, MPU guard, fault
reporter, linker script with the RAM and flash sizes as parameters).
`python -m firmware_bridge.build [--target T] [--ram 256KiB] -o DIR` does it from a shell;
`edgekd board firmware` too."""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from edgekd.design.units import parse_bytes
from edgekd.errors import EdgekdError

FIRMWARE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "firmware")
BOARD_SOURCES = ("board.c", "cobs.c", "crc32.c", "sha256.c", "ekb_model.c", "ekb_train.c")
SOURCES = BOARD_SOURCES + ("host/main_host.c",)
PORT_DIR = "ports/mps2"
PORT_SOURCES = tuple(f"{PORT_DIR}/{s}" for s in
                     ("startup.c", "fault.c", "mpu.c", "uart_cmsdk.c", "main_mps2.c"))
WARNINGS = ("-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror")
CFLAGS = WARNINGS[:1] + ("-O2",) + WARNINGS[1:]
SANITIZE = ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-g")

KiB, MiB = 1024, 1024 * 1024
CROSS_CC = "arm-none-eabi-gcc"
APT_HINT = {CROSS_CC: "gcc-arm-none-eabi", "arm-none-eabi-size": "binutils-arm-none-eabi",
            "newlib-nano": "libnewlib-arm-none-eabi", "qemu-system-arm": "qemu-system-arm"}
MPU_RAM_PIECES = 6   # of the 8 MPU regions: two close the RAM window and what lies below it


@dataclass(frozen=True)
class Target:
    name: str
    cpu_flags: tuple      # empty for the host
    clock_hz: int
    default_ram: int
    default_flash: int
    description: str

    @property
    def cross(self):
        return bool(self.cpu_flags)


TARGETS = {
    "host": Target("host", (), 240_000_000, 512 * KiB, 8 * MiB,
                   "this machine (gcc), serving a pseudo-terminal"),
    "mps2-an386": Target("mps2-an386", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                                        "-mfpu=fpv4-sp-d16"), 25_000_000, 256 * KiB, 4 * MiB,
                         "Arm MPS2 AN386: Cortex-M4F, hard float (QEMU mps2-an386)"),
    "mps2-an385": Target("mps2-an385", ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"),
                         25_000_000, 256 * KiB, 4 * MiB,
                         "Arm MPS2 AN385: Cortex-M3, no FPU, soft float (QEMU mps2-an385)"),
}
STACK_BYTES = 8 * KiB        # the thread stack by default; the handlers' 1 KiB is apart
MIN_STACK = 512
QEMU_RAM_WINDOW = 4 * MiB    # SSRAM2/3 at 0x20000000
QEMU_FLASH_WINDOW = 4 * MiB  # SSRAM1 at 0: code, data image and the model slot


def get_target(name):
    try:
        return TARGETS[name]
    except KeyError:
        raise EdgekdError(f"unknown firmware target {name!r}; choose one of "
                          f"{', '.join(TARGETS)}") from None


def _define_args(defines):
    args = []
    for key, value in sorted((defines or {}).items()):
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        args.append(f"-D{key}={value}")
    return args


def missing_tool(tool, what):
    return EdgekdError(f"cannot build {what}: {tool} not found (apt-get install "
                       f"{APT_HINT.get(tool, tool)})")


def _check_cross_tools(target):
    what = f"the {target.name} firmware"
    if shutil.which(CROSS_CC) is None:
        raise missing_tool(CROSS_CC, what)
    lib = subprocess.run([CROSS_CC, *target.cpu_flags, "-print-file-name=libc_nano.a"],
                         check=False, capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(lib) or not os.path.exists(lib):
        raise EdgekdError(f"cannot build {what}: newlib-nano for {CROSS_CC} not found "
                          f"(apt-get install {APT_HINT['newlib-nano']})")


def check_ram(target, ram):
    """The RAM size a port can be linked for and guarded by the MPU, or EdgekdError."""
    if not target.cross:
        return
    if ram % KiB or not 32 * KiB <= ram <= QEMU_RAM_WINDOW:
        raise EdgekdError(f"--ram {ram:,} B: {target.name} takes a multiple of 1 KiB from "
                          f"32 KiB to {QEMU_RAM_WINDOW // MiB} MiB")
    if bin(ram).count("1") > MPU_RAM_PIECES:
        raise EdgekdError(f"--ram {ram:,} B is not a sum of at most {MPU_RAM_PIECES} powers of "
                          f"two, which the MPU guard needs (e.g. 64KiB, 96KiB, 256KiB)")


def check_stack(stack):
    """The thread stack a port can be linked with, or EdgekdError."""
    if stack % 8 or not MIN_STACK <= stack <= 64 * KiB:
        raise EdgekdError(f"--stack {stack:,} B: take a multiple of 8 bytes from "
                          f"{MIN_STACK:,} B to 64 KiB")
    return stack


def _hash_sources(h):
    for root, _, files in sorted(os.walk(FIRMWARE_DIR)):
        for name in sorted(files):
            if name.endswith((".c", ".h", ".ld")):
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    h.update(os.path.relpath(path, FIRMWARE_DIR).encode() + f.read())


def build_firmware(out_dir, defines=None, cc=None, target="host", ram=None, flash=None,
                   sanitize=False, stack=None):
    """Compile the firmware for `target` into out_dir; returns the executable's (host) or
    ELF image's (Cortex-M) path. The name carries a hash of the sources and flags, so an
    unchanged build is reused. `ram`/`flash` (bytes) are the board's sizes: INFO reports
    them and, on Cortex-M, the linker script and the MPU enforce them."""
    t = get_target(target)
    ram = t.default_ram if ram is None else int(ram)
    flash = t.default_flash if flash is None else int(flash)
    check_ram(t, ram)
    if stack is not None and not t.cross:
        raise EdgekdError("--stack sizes a Cortex-M image's thread stack; the host build runs "
                          "on this machine's")
    stack = check_stack(STACK_BYTES if stack is None else int(stack))
    defs = {"EKB_RAM_BYTES": ram, "EKB_FLASH_BYTES": flash, "EKB_CLOCK_HZ": t.clock_hz}
    if t.cross:
        defs["EKB_BOARD_NAME"] = t.name
    defs.update(defines or {})
    if t.cross:
        _check_cross_tools(t)
        cc = CROSS_CC
        args = [*t.cpu_flags, *WARNINGS, "-Os", "-ffunction-sections", "-fdata-sections",
                '-DEKB_MODEL_PLACEMENT=__attribute__((section(".model_slot")))',
                *_define_args(defs)]
        link = ["--specs=nano.specs", "--specs=nosys.specs", "-nostartfiles",
                "-T", os.path.join(FIRMWARE_DIR, PORT_DIR, "mps2.ld"),
                f"-Wl,--defsym=__flash_size={min(flash, QEMU_FLASH_WINDOW)}",
                f"-Wl,--defsym=__ram_size={ram}", f"-Wl,--defsym=__stack_size={stack}",
                "-Wl,--gc-sections"]
        sources, suffix = BOARD_SOURCES + PORT_SOURCES, ".elf"
    else:
        cc = cc or os.environ.get("CC") or "gcc"
        if shutil.which(cc) is None:
            raise EdgekdError(f"cannot build the firmware: C compiler {cc!r} not found (set CC)")
        args = list(CFLAGS) + (list(SANITIZE) if sanitize else []) + _define_args(defs)
        link, sources, suffix = [], SOURCES, ""
    h = hashlib.sha256(" ".join([cc, *args, *link]).encode())
    _hash_sources(h)
    os.makedirs(out_dir, exist_ok=True)
    prefix = "edgekd-firmware" if t.name == "host" else f"edgekd-firmware-{t.name}"
    exe = os.path.join(out_dir, f"{prefix}-{h.hexdigest()[:12]}{suffix}")
    if os.path.exists(exe):
        return exe
    tmp = f"{exe}.tmp{os.getpid()}"
    cmd = [cc, *args, "-o", tmp, *(os.path.join(FIRMWARE_DIR, s) for s in sources), *link, "-lm"]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if res.returncode != 0:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise EdgekdError(_build_error(cc, res, ram))
    os.replace(tmp, exe)
    return exe


def _build_error(cc, res, ram):
    text = res.stderr.strip()
    over = re.search(r"region `RAM' overflowed by (\d+) bytes", text)
    if over:
        return (f"the firmware does not fit {ram:,} bytes of RAM: it needs "
                f"{int(over.group(1)):,} more (raise --ram or lower the -D buffer sizes)")
    for line in text.splitlines():
        if "edgekd:" in line or "error" in line:
            return f"firmware build failed ({cc} exit {res.returncode}): {line.strip()}"
    first = (text.splitlines() or ["(no output)"])[0]
    return f"firmware build failed ({cc} exit {res.returncode}): {first}"


def image_sizes(path):
    """{text, data, bss, model_slot, stack} bytes of a Cortex-M image (arm-none-eabi-size -A):
    text is code and constants in flash, bss the static RAM past the stack and .data."""
    tool = "arm-none-eabi-size"
    if shutil.which(tool) is None:
        raise missing_tool(tool, "the image's sizes")
    out = subprocess.run([tool, "-A", path], check=True, capture_output=True, text=True).stdout
    sec = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            sec[parts[0]] = int(parts[1])
    return {"text": sec.get(".text", 0) + sec.get(".ARM.exidx", 0), "data": sec.get(".data", 0),
            "bss": sec.get(".bss", 0), "stack": sec.get(".stack", 0),
            "model_slot": sec.get(".model_slot", 0)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-o", "--out", default="build", help="output directory")
    ap.add_argument("--target", default="host", choices=sorted(TARGETS))
    ap.add_argument("--ram", help="the board's RAM, e.g. 256KiB")
    ap.add_argument("-D", dest="defines", action="append", default=[],
                    help="NAME=VALUE, e.g. EKB_MODEL_SLOT=32768 (see firmware/ekb_config.h)")
    a = ap.parse_args(argv)
    defines = dict(d.split("=", 1) if "=" in d else (d, 1) for d in a.defines)
    print(build_firmware(a.out, defines, target=a.target,
                         ram=None if a.ram is None else parse_bytes(a.ram)))


if __name__ == "__main__":
    main()
