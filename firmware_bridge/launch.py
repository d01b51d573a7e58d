"""Starts a board process (the emulator or the host-built firmware) and reads the port it
announces on its first stdout line, so tests and scripts can talk to it like to a plugged-in
board; stops it by its pid."""

import json
import os
import select
import signal
import subprocess
import tempfile
import time

from edgekd.errors import EdgekdError


def stop_process(proc, grace_s=5):
    """Wake (a paused board), ask it to end, and kill it if it has not within `grace_s`."""
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class BoardProcess:
    """A running board: `.port` is its serial device, `.announce` its first line as a dict."""

    def __init__(self, argv, env=None, start_timeout=30.0):
        # stderr to a file, closed in close(): a chatty board never blocks on a full pipe
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL, env=env)
        line = _read_line(self.proc, start_timeout)
        try:
            self.announce = json.loads(line)
            self.port = self.announce["port"]
        except (ValueError, KeyError, TypeError):
            err = self._stderr_tail()
            self.close()
            raise EdgekdError(f"board process did not announce a port (got {line!r}) {err}") from None

    def stderr(self):
        """What the board process wrote on stderr so far."""
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def _stderr_tail(self):
        return " ".join(self.stderr().split())[-500:]

    @property
    def board_pid(self):
        """The process that is the board: the one the announce names (QEMU for `board qemu`),
        else the one started."""
        pid = self.announce.get("pid") if isinstance(self.announce, dict) else None
        return pid if isinstance(pid, int) and pid > 0 else self.proc.pid

    def pause(self):
        """SIGSTOP: the board stops answering, as a hung board does."""
        os.kill(self.board_pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.board_pid, signal.SIGCONT)

    def close(self):
        if self.proc.poll() is None:
            if getattr(self, "announce", None) is not None and self.board_pid != self.proc.pid:
                try:
                    os.kill(self.board_pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            stop_process(self.proc)
        self.proc.stdout.close()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _read_line(proc, timeout):
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            raise EdgekdError(f"board process gave no port within {timeout} s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\n", 1)[0].decode("utf-8", "replace")
