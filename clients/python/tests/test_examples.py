"""The examples, run as a user would: the Python agent queued behind the
Rust service example and behind the Python service example."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from conftest import PATIENCE, REPO, Broker, broker_bin, read_line, wait_until_state

EXAMPLES = REPO / "clients" / "python" / "examples"


def service_bin() -> pathlib.Path:
    """The Rust ``service`` example (``cargo build --example service``)."""
    default = broker_bin().parent / "examples" / "service"
    return pathlib.Path(os.environ.get("TURNSTILE_SERVICE_BIN", default))


def spawn(cmd: "list[str]", b: Broker) -> "subprocess.Popen[bytes]":
    env = dict(os.environ, TURNSTILE_SOCKET=b.socket, RUST_LOG="warn")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_agent_queues_behind_the_rust_service_example(broker: Broker) -> None:
    exe = service_bin()
    if not exe.exists():
        pytest.fail(f"{exe} does not exist: run `cargo build --example service` or set TURNSTILE_SERVICE_BIN")
    service = spawn([str(exe), "Install Office 97"], broker)
    try:
        wait_until_state(broker, "pcm", lambda s: bool(s.holders), "the service's job")
        agent = spawn([sys.executable, str(EXAMPLES / "agent.py")], broker)
        line = read_line(agent, "queued at position 1")
        assert "Install Office 97" in line, line
        read_line(agent, "initialised")
        assert agent.wait(PATIENCE) == 0
        assert service.wait(PATIENCE) == 0
    finally:
        service.kill()
        service.wait()


def test_agent_queues_behind_the_python_service_example(broker: Broker) -> None:
    service = spawn(
        [sys.executable, str(EXAMPLES / "service.py"), "--steps", "5", "--step", "1.0", "Update antivirus"], broker
    )
    try:
        read_line(service, "started")
        agent = spawn([sys.executable, str(EXAMPLES / "agent.py")], broker)
        line = read_line(agent, "queued at position 1")
        assert "Update antivirus" in line, line
        read_line(agent, "initialised")
        assert agent.wait(PATIENCE) == 0
        read_line(service, "done, notice 1")
        assert service.wait(PATIENCE) == 0
        with broker.connect() as c:
            notice = c.consume("pcm.notices").get(timeout=PATIENCE)
            assert (notice.payload, notice.headers) == (b"Update antivirus done", {"job": "Update antivirus"})
    finally:
        service.kill()
        service.wait()


def test_service_example_declines_a_yield_request_mid_job(broker: Broker) -> None:
    service = spawn([sys.executable, str(EXAMPLES / "service.py"), "--steps", "20", "--step", "0.5", "Defrag"], broker)
    try:
        read_line(service, "started")
        with broker.connect("logon") as c, c.watch(["pcm"]) as w:
            c.request_yield("pcm", within=60.0, reason="user logon")
            line = read_line(service, "asks to make way")
            assert "user logon" in line and "declining" in line, line
            while True:
                ev = w.next(timeout=PATIENCE)
                if ev.kind == "YIELD_DECLINED":
                    break
            assert "mid-job" in ev.detail, ev.detail
    finally:
        service.kill()
        service.wait()
