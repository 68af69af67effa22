"""The harness: the real ``turnstiled`` on a temporary socket, the real
``turnstile`` CLI as a Rust holder, and helpers that wait on what they can
observe (a watch, a line of output), never on a sleep.

``TURNSTILE_BIN`` names the broker (default: the workspace's
``target/debug/turnstiled``), ``TURNSTILE_CLI_BIN`` the CLI (default: the
``turnstile`` beside the broker). Build them with
``cargo build --bin turnstiled --bin turnstile``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket as socketlib
import subprocess
import tempfile
import time
from typing import Callable, Iterator, List, Optional

import pytest

import turnstile

REPO = pathlib.Path(__file__).resolve().parents[3]
#: How long any wait in a test may take before the test fails: generous, as
#: the machine may be busy; tests assert order and outcome, not speed.
PATIENCE = 30.0


def broker_bin() -> pathlib.Path:
    """The ``turnstiled`` to test against."""
    return pathlib.Path(os.environ.get("TURNSTILE_BIN", REPO / "target" / "debug" / "turnstiled"))


def cli_bin() -> pathlib.Path:
    """The ``turnstile`` CLI (a Rust holder)."""
    default = broker_bin().parent / "turnstile"
    return pathlib.Path(os.environ.get("TURNSTILE_CLI_BIN", default))


class Broker:
    """A ``turnstiled`` process on ``dir/turnstile.sock`` with its data in ``dir/data``."""

    def __init__(self, directory: pathlib.Path, args: List[str]) -> None:
        self.dir = directory
        self.socket = str(directory / "turnstile.sock")
        self.args = args
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self.logs = 0

    def start(self) -> None:
        """Starts it and waits until its socket accepts connections."""
        exe = broker_bin()
        if not exe.exists():
            pytest.fail(f"{exe} does not exist: run `cargo build --bin turnstiled --bin turnstile` or set TURNSTILE_BIN")
        self.logs += 1
        log = open(self.dir / f"broker-{self.logs}.log", "wb")
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.proc = subprocess.Popen(
            [str(exe), "--socket", self.socket, "--data-dir", str(self.dir / "data"), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + PATIENCE
        while True:
            s = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
            try:
                s.connect(self.socket)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"turnstiled did not start:\n{self.log()}")
                time.sleep(0.01)
            finally:
                s.close()

    def log(self) -> str:
        """The newest log."""
        return (self.dir / f"broker-{self.logs}.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signals it and waits for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(PATIENCE)
        self.proc = None

    def restart(self) -> None:
        """A clean stop, then a start on the same socket and data."""
        self.stop()
        self.start()

    def connect(self, name: str = "test") -> turnstile.Client:
        """A blocking client of this broker."""
        return turnstile.connect(self.socket, name=name)

    def cli(self, *args: str, stdin: int = subprocess.DEVNULL) -> "subprocess.Popen[bytes]":
        """Starts the Rust CLI against this broker, in a session of its own."""
        return subprocess.Popen(
            [str(cli_bin()), "--socket", self.socket, *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )


@pytest.fixture
def broker_dir() -> Iterator[pathlib.Path]:
    """A fresh directory others can traverse (tests run clients as another user)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="turnstile-py-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def broker(broker_dir: pathlib.Path) -> Iterator[Broker]:
    """A started broker with default flags."""
    b = Broker(broker_dir, [])
    b.start()
    yield b
    b.stop(signal.SIGKILL)


@pytest.fixture
def make_broker(broker_dir: pathlib.Path) -> Iterator[Callable[..., Broker]]:
    """Starts a broker with extra flags: ``make_broker("--max-leases-per-connection", "1")``."""
    started: List[Broker] = []

    def make(*args: str) -> Broker:
        b = Broker(broker_dir, list(args))
        b.start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop(signal.SIGKILL)


def wait_until_state(
    b: Broker, resource: str, pred: Callable[[turnstile.ResourceState], bool], what: str
) -> turnstile.ResourceState:
    """Watches ``resource`` until its state satisfies ``pred``; fails after PATIENCE."""
    with b.connect("observer") as c, c.watch([resource]) as w:
        deadline = time.monotonic() + PATIENCE
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{resource}: never saw {what}")
            ev = w.next(timeout=left)
            states = ev.states if ev.kind == "SNAPSHOT" else ((ev.state,) if ev.state else ())
            for s in states:
                if s.resource == resource and pred(s):
                    return s


def read_line(proc: "subprocess.Popen[bytes]", contains: str) -> str:
    """Reads ``proc``'s stdout until a line containing ``contains``; fails at EOF."""
    assert proc.stdout is not None
    seen = []
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        seen.append(line)
        if contains in line:
            return line
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    pytest.fail(f"no line with {contains!r}; stdout: {seen}; stderr: {err}")
