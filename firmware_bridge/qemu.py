"""Runs the Cortex-M firmware in QEMU (`qemu-system-arm -M mps2-an386|mps2-an385`) with the
CMSDK UART0 on a pseudo-terminal, so every `edgekd board` command drives it as it drives a
plugged-in board.

QEMU's `-serial pty` drops what the firmware sends while no host has the pty open and looks
for one only once a second, so the UART goes to a Unix socket that we hold, relayed to a pty
of our own whose slave end we keep open: the line is up whether or not a host is. The port
is announced once the firmware's boot byte (a lone 0x00: an empty packet to the protocol)
has come through, so its receiver is on before a host speaks. Under `-icount shift=0` every
retired instruction is one tick of virtual time: SysTick counts instructions."""

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import termios
import threading
import time
import tty

from edgekd.errors import EdgekdError

from .build import APT_HINT, get_target
from .launch import stop_process

MACHINES = ("mps2-an386", "mps2-an385")
QEMU = "qemu-system-arm"
ICOUNT = "shift=0,align=off,sleep=off"


def qemu_argv(machine, image, uart_socket, icount=True):
    if machine not in MACHINES:
        raise EdgekdError(f"unknown QEMU machine {machine!r}; choose {' or '.join(MACHINES)}")
    argv = [QEMU, "-M", machine, "-display", "none", "-monitor", "none", "-nodefaults",
            "-chardev", f"socket,id=uart0,path={uart_socket},server=on,wait=on",
            "-serial", "chardev:uart0", "-kernel", image]
    if icount:
        argv += ["-icount", ICOUNT]
    return argv


class QemuBoard:
    """QEMU running `image`; `.port` is the firmware's serial line (a pty), `.pid` QEMU's."""

    def __init__(self, machine, image, icount=True, start_timeout=20.0):
        get_target(machine)
        if shutil.which(QEMU) is None:
            raise EdgekdError(f"cannot start QEMU: {QEMU} not found (apt-get install "
                              f"{APT_HINT[QEMU]})")
        if not os.path.isfile(image):
            raise EdgekdError(f"no firmware image at {image}")
        self.dir = tempfile.mkdtemp(prefix="edgekd-qemu-")
        path = os.path.join(self.dir, "uart0.sock")
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - QEMU's messages, for errors
        self.proc = subprocess.Popen(qemu_argv(machine, image, path, icount),
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.sock = self.master = self.slave = None
        self._stop = threading.Event()
        self._relay = None
        try:
            deadline = time.monotonic() + start_timeout
            self.sock = self._connect(path, deadline)
            self.master, self.slave = os.openpty()
            tty.setraw(self.slave, termios.TCSANOW)
            self.port = os.ttyname(self.slave)
            self._wait_for_boot_byte(deadline)
            self._relay = threading.Thread(target=self._pump, daemon=True)
            self._relay.start()
        except BaseException:
            self.close()
            raise

    def _qemu_said(self):
        self.log.seek(0)
        text = " ".join(self.log.read().decode("utf-8", "replace").split())
        return text[-300:] or "(no output)"

    def _connect(self, path, deadline):
        while True:
            if self.proc.poll() is not None:
                raise EdgekdError(f"QEMU exited with {self.proc.returncode}: {self._qemu_said()}")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise EdgekdError("QEMU opened no UART socket in time") from None
                time.sleep(0.02)

    def _wait_for_boot_byte(self, deadline):
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise EdgekdError(f"the firmware in QEMU sent nothing on its UART in time "
                                  f"({self._qemu_said()})")
            ready, _, _ = select.select([self.sock], [], [], min(left, 0.5))
            if ready:
                if not self.sock.recv(64):
                    raise EdgekdError(f"QEMU closed the UART: {self._qemu_said()}")
                return

    def _pump(self):
        """Bytes both ways between the pty and QEMU's UART socket, until close()."""
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master, self.sock], [], [], 0.2)
                if self.master in ready:
                    data = os.read(self.master, 1 << 16)
                    if data:
                        self.sock.sendall(data)
                if self.sock in ready:
                    data = self.sock.recv(1 << 16)
                    if not data:
                        return  # QEMU is gone
                    view = memoryview(data)
                    while view:
                        view = view[os.write(self.master, view):]
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)  # EIO while no host has the port open: wait for the next

    def wait(self):
        """Until QEMU exits; returns its exit status."""
        return self.proc.wait()

    def close(self):
        self._stop.set()
        if self.proc.poll() is None:
            stop_process(self.proc)
        if self._relay is not None:
            self._relay.join(2)
        for closer in (self.sock and self.sock.close,
                       self.master is not None and (lambda: os.close(self.master)),
                       self.slave is not None and (lambda: os.close(self.slave))):
            if closer:
                closer()
        self.sock = self.master = self.slave = None
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_until_signalled(board, on_ready):
    """Calls on_ready(board), then waits for QEMU; SIGINT or SIGTERM stop QEMU and return."""
    stop = {"signal": None}

    def handler(signum, _frame):
        stop["signal"] = signum
        if board.proc.poll() is None:
            board.proc.terminate()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        on_ready(board)
        status = board.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        board.close()
    if stop["signal"] is None and status != 0:
        raise EdgekdError(f"QEMU exited with status {status}")
    return status
