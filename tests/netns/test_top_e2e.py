"""`slirpy flows --watch` (and `slirpy top`) against a running sandbox with a download in
progress: in a pseudo-terminal (a set window size, then a resize, then Ctrl-C), when the
sandbox goes away under it, and with stdout a pipe (one snapshot)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time

from slirpy.top import LEAVE, strip_escapes

from .util import HOST_ADDR, REPO, slirpy_argv

GUEST = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.settimeout(120)
while s.recv(65536):           # held open, reading, until the host closes
    pass
"""

RATE = re.compile(r"(\d+(?:\.\d+)?) (B|KiB|MiB|GiB)/s")
HOME = "\x1b[H"


class Trickle:
    """A host server that sends 16 KiB every 20 ms to its one client until closed: a
    download that stays in progress for as long as the test looks at it."""

    def __init__(self) -> None:
        self.srv = socket.socket()
        self.srv.bind((HOST_ADDR, 0))
        self.srv.listen(1)
        self.srv.settimeout(60)
        self.port = self.srv.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            while not self.stop.wait(0.02):
                try:
                    conn.sendall(b"d" * 16384)
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.srv.close()
        self.thread.join(timeout=15)


class Sandbox:
    def __init__(self, tmp_path) -> None:
        self.server = Trickle()
        self.api = str(tmp_path / "api.sock")
        self.proc = subprocess.Popen(
            slirpy_argv("--api-socket", self.api) + [sys.executable, "-c", GUEST, HOST_ADDR,
                                                     str(self.server.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.api):
            assert self.proc.poll() is None, self.proc.communicate()[1]
            assert time.monotonic() < deadline, "no API socket"
            time.sleep(0.05)
        self.endpoint = f"{HOST_ADDR}:{self.server.port}"

    def kill(self) -> None:
        if self.proc.returncode is None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.communicate(timeout=30)

    def close(self) -> None:
        self.kill()
        self.server.close()


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_tty() -> None:          # in the child, after setsid: the pty is its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyRun:
    """A command on the slave side of a pseudo-terminal; the master's output collected."""

    def __init__(self, argv: list[str], rows: int, cols: int) -> None:
        self.master, slave = os.openpty()
        set_size(slave, rows, cols)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                                     cwd=REPO, start_new_session=True,
                                     preexec_fn=_controlling_tty)
        os.close(slave)
        self.out = ""

    def read_until(self, found, timeout: float = 60.0, start: int = 0) -> str | None:
        """Read until found(text read since `start`) is true (returns that text) or the
        terminal closes / the timeout passes (returns None)."""
        deadline = time.monotonic() + timeout
        while True:
            if found(self.out[start:]):
                return self.out[start:]
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                return None

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], min(timeout, 1.0))
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:                  # EIO: the slave side is closed
            return False
        if not data:
            return False
        self.out += data.decode(errors="replace")
        return True

    def wait(self, timeout: float = 30.0) -> int:
        """The command's exit status, reading its output meanwhile (a terminal nobody reads
        fills up and blocks the writer), then everything it wrote until the slave closed."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        status = self.proc.wait(timeout=1)
        self.drain()
        return status

    def drain(self) -> None:
        """Read what is left, until the slave side closes (the command has exited)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self._read(1.0):
            pass

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)
        os.close(self.master)


def frames(text: str) -> list[list[str]]:
    """The complete frames in `text` (each ends where the next starts), as screen lines."""
    parts = text.split(HOME)[1:-1]
    return [strip_escapes(p).replace("\r", "").split("\n") for p in parts]


def flow_line(frame: list[str], endpoint: str) -> str | None:
    return next((ln for ln in frame if endpoint in ln), None)


def moving(line: str | None) -> bool:
    """The line's to-guest rate (its second rate) is above zero."""
    rates = RATE.findall(line or "")
    return len(rates) >= 2 and float(rates[1][0]) > 0


def watch_argv(api: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "slirpy", "flows", "--watch", "--interval", "0.3",
            "--api-socket", api, *extra]


def test_watch_in_a_terminal_shows_the_download_resizes_and_quits_on_ctrl_c(tmp_path):
    box = Sandbox(tmp_path)
    term = PtyRun(watch_argv(box.api), 30, 130)
    try:
        def wide_and_moving(text: str) -> bool:
            return any(moving(flow_line(f, box.endpoint)) for f in frames(text))
        seen = term.read_until(wide_and_moving)
        assert seen is not None, term.out[-3000:]
        assert term.out.startswith("\x1b[?1049h"), term.out[:50]     # the alternate screen
        frame = next(f for f in frames(seen) if moving(flow_line(f, box.endpoint)))
        assert frame[0].startswith("tcp 1 "), frame[0]
        assert frame[1].split()[:5] == ["PROTO", "DIR", "GUEST", "HOST", "STATE"]
        line = flow_line(frame, box.endpoint)
        assert line.split()[:2] == ["tcp", "out"] and "ESTABLISHED" in line, line
        assert all(len(ln) <= 130 for ln in frame)

        mark = len(term.out)
        set_size(term.master, 20, 60)         # the kernel sends SIGWINCH to the view

        port = f":{box.server.port}"          # the host endpoint may be clipped on the left

        def narrow(text: str) -> bool:
            return any(moving(flow_line(f, port)) and max(map(len, f)) <= 60
                       and flow_line(f, port).startswith("tcp")
                       and "ESTABLISHED" not in flow_line(f, port)
                       for f in frames(text))
        assert term.read_until(narrow, start=mark) is not None, term.out[mark:][-3000:]

        os.write(term.master, b"\x03")       # Ctrl-C
        assert term.wait() == 0, term.proc.stderr.read()
        assert term.out.endswith(LEAVE), repr(term.out[-80:])
        assert term.out.endswith("\x1b[?1049l")
        assert term.proc.stderr.read() == b""
        assert termios.tcgetattr(term.master)[3] & (termios.ECHO | termios.ICANON) == (
            termios.ECHO | termios.ICANON)          # typed keys echo again
    finally:
        term.close()
        box.close()


def test_watch_exits_with_one_line_when_the_sandbox_goes_away(tmp_path):
    box = Sandbox(tmp_path)
    term = PtyRun([sys.executable, "-m", "slirpy", "top", "--interval", "0.3", "--api-socket",
                   box.api], 24, 80)
    try:
        assert term.read_until(lambda t: any(flow_line(f, box.endpoint) for f in frames(t)))
        box.kill()
        assert term.wait() == 1
        assert term.out.endswith(LEAVE), repr(term.out[-80:])
        err = term.proc.stderr.read().decode()
        assert len(err.strip().splitlines()) == 1 and box.api in err, err
    finally:
        term.close()
        box.close()


def test_top_quits_on_q_and_on_sigterm_restoring_the_terminal(tmp_path):
    box = Sandbox(tmp_path)
    try:
        for stop, status in ((lambda t: os.write(t.master, b"q"), 0),
                             (lambda t: t.proc.send_signal(signal.SIGTERM), 128 + 15)):
            term = PtyRun([sys.executable, "-m", "slirpy", "top", "--api-socket", box.api],
                          24, 80)
            try:
                assert term.read_until(lambda t: len(frames(t)) >= 2), term.out[-2000:]
                stop(term)
                assert term.wait() == status
                assert term.out.endswith(LEAVE), repr(term.out[-80:])
                assert termios.tcgetattr(term.master)[3] & termios.ECHO
            finally:
                term.close()
    finally:
        box.close()


def test_watch_with_stdout_a_pipe_prints_one_snapshot(tmp_path):
    box = Sandbox(tmp_path)
    try:
        deadline = time.monotonic() + 30
        while True:       # until the guest's connection is in the table
            rows = subprocess.run([sys.executable, "-m", "slirpy", "flows", "--api-socket",
                                   box.api], capture_output=True, text=True, cwd=REPO, timeout=30)
            if box.endpoint in rows.stdout:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
        r = subprocess.run(watch_argv(box.api), capture_output=True, text=True, cwd=REPO,
                           timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert "\x1b" not in r.stdout
        lines = r.stdout.splitlines()
        assert lines[0].startswith("tcp 1 ") and "to-guest" in lines[0], lines
        assert lines[1].split() == ["PROTO", "DIR", "GUEST", "HOST", "STATE", "TO-HOST/s",
                                    "TO-GUEST/s", "TOTAL", "AGE"]
        assert len(lines) == 3 and moving(flow_line(lines, box.endpoint)), lines
    finally:
        box.close()
