"""The Cortex-M port (firmware_bridge/firmware/ports/mps2/) in QEMU: images for the M4F and
the M3 with RAM as a build parameter, the linker's and the MPU's limits, faults reported over
the UART, `edgekd board qemu` starting and stopping QEMU, and one-line errors when a tool is
missing."""

import json
import os
import signal
import subprocess
import time

import pytest

from boardutil import (EDGEKD, QEMU_MACHINES, board_models, board_params, boards, missing,  # noqa: F401
                       one_line_error)

KiB = 1024


def run(*args, env=None):
    return subprocess.run(EDGEKD + ["board", *args], check=False, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("kind", board_params("qemu-m4f", "qemu-m3"))
def test_images_are_sized_by_ram_and_refused_past_it(kind, tmp_path):
    target = QEMU_MACHINES[kind]
    r = run("firmware", "--target", target, "--ram", "128KiB", "-o", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["target"] == target and res["executable"].endswith(".elf")
    assert 4 * KiB < res["text"] < 64 * KiB
    assert res["data"] + res["bss"] + res["stack"] <= 128 * KiB
    assert res["model_slot"] >= 16 * KiB  # the deployed model lives in flash
    one_line_error(run("firmware", "--target", target, "--ram", "40KiB", "-o", str(tmp_path)),
                   "does not fit 40,960 bytes of RAM")
    one_line_error(run("firmware", "--target", target, "--ram", "100000", "-o", str(tmp_path)),
                   "multiple of 1 KiB")
    one_line_error(run("firmware", "--target", target, "--ram", "127KiB", "-o", str(tmp_path)),
                   "powers of two")
    small = run("firmware", "--target", target, "--ram", "128KiB", "--stack", "2KiB", "-o",
                str(tmp_path), "--json")
    assert small.returncode == 0, small.stderr
    assert res["stack"] - json.loads(small.stdout)["stack"] == 6 * KiB   # 8 KiB by default
    one_line_error(run("firmware", "--target", target, "--stack", "100", "-o", str(tmp_path)),
                   "--stack 100 B")
    one_line_error(run("firmware", "--target", "host", "--stack", "2KiB", "-o", str(tmp_path)),
                   "--stack sizes a Cortex-M image")


def test_missing_tools_are_named_with_their_package(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no compiler, no QEMU on this PATH
    one_line_error(run("firmware", "--target", "mps2-an386", "-o", str(tmp_path), env=env),
                   "arm-none-eabi-gcc not found", "apt-get install gcc-arm-none-eabi")
    image = tmp_path / "fw.elf"
    image.write_bytes(b"\x7fELF")
    one_line_error(run("qemu", "--firmware", str(image), env=env),
                   "qemu-system-arm not found", "apt-get install qemu-system-arm")


@pytest.mark.parametrize("kind", board_params("qemu-m4f", "qemu-m3"))
def test_faults_are_reported_over_the_uart_and_the_board_resets(kind, boards):
    """Reading past the board's RAM, overflowing the stack and executing from RAM each trip
    the MPU; the fault handler sends one BOARD_ERROR frame (code 8) naming the fault, resets,
    and the board serves again (without its model)."""
    from firmware_bridge import commands
    from firmware_bridge import messages as m
    from firmware_bridge.protocol import BoardError
    ram = 96 * KiB
    expect = {0: f"MemManage fault, data access at {0x20000000 + ram:#010x}",
              1: "stack overflow", 2: "MemManage fault"}
    with boards.start(kind, defines={"EKB_TEST_FAULTS": 1}, ram=ram) as board, \
            commands.connect(board.port, timeout=3, retries=1) as client:
        assert commands.info(client).ram == ram
        for kind_of_fault, text in expect.items():
            with pytest.raises(BoardError) as e:
                client.request(0x3E, bytes([kind_of_fault]))
            assert e.value.code == m.E_FAULT and text in str(e.value), str(e.value)
            assert "the board resets" in str(e.value)
            assert not commands.info(client).has_model


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.skipif(missing("qemu-m4f") is not None, reason=missing("qemu-m4f") or "")
def test_board_qemu_stops_qemu_when_stopped(sig, boards):
    image = boards.firmware("qemu-m4f")
    proc = subprocess.Popen(EDGEKD + ["board", "qemu", "--firmware", image, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["port"].startswith("/dev/") and first["machine"] == "mps2-an386"
        qemu_pid = first["pid"]
        os.kill(qemu_pid, 0)  # QEMU runs
        proc.send_signal(sig)
        assert proc.wait(30) == 0, proc.stderr.read()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(qemu_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("QEMU still runs after `board qemu` was stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("kind", board_params("emulator", "host-c", "qemu-m4f", "qemu-m3"))
def test_bench_counts_instructions_on_the_isa(kind, boards, board_models):
    """Under -icount the count follows the code, not the machine's load: repeated runs agree
    and n runs cost n times one, to within one SysTick tick (40 instructions) per
    measurement, since where a run starts within a tick varies. Boards that cannot count
    say so."""
    from boardutil import ok
    with boards.start(kind) as board:
        ok(board.port, "deploy", str(board_models["student"]))
        one = ok(board.port, "bench", "--data", "digits", "-n", "1")
        if kind not in QEMU_MACHINES:
            assert not one["counted"] and one["instructions_per_inference"] is None
            return
        ten = ok(board.port, "bench", "--data", "digits", "-n", "10")
        again = ok(board.port, "bench", "--data", "digits", "-n", "10")
        assert one["counted"] and again["counted"]
        per = ten["instructions_per_inference"]
        assert abs(again["instructions_per_inference"] - per) <= 40 / 10
        # the 64-32-16-10 int8 MLP: 2,720 multiply-accumulates
        assert 2720 < per < 20 * 2720
        assert abs(one["instructions_per_inference"] - per) <= 40 + 40 / 10
