"""The endpoint rules, the same as the broker's and the Rust client's."""

from __future__ import annotations

import os
import sys

import pytest

import turnstile
from turnstile import _endpoint
from conftest import Broker


def test_default_socket_follows_xdg_runtime_dir_then_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert turnstile.default_socket() == "/run/user/1000/turnstile.sock"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "")
    monkeypatch.setattr(os, "getuid", lambda: 0)
    assert turnstile.default_socket() == "/run/turnstile/turnstile.sock"
    monkeypatch.setattr(os, "getuid", lambda: 1234)
    assert turnstile.default_socket() == "/tmp/turnstile-1234/turnstile.sock"
    monkeypatch.setattr(sys, "platform", "win32")
    assert turnstile.default_socket() == r"\\.\pipe\turnstile"


def test_env_then_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv(turnstile.SOCKET_ENV, "")
    assert turnstile.socket_from_env() == "/run/user/7/turnstile.sock"
    monkeypatch.setenv(turnstile.SOCKET_ENV, "/somewhere/else.sock")
    assert turnstile.socket_from_env() == "/somewhere/else.sock"
    assert _endpoint.resolve_socket(None) == "/somewhere/else.sock"
    assert _endpoint.resolve_socket("/given.sock") == "/given.sock"


def test_connect_uses_turnstile_socket(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(turnstile.SOCKET_ENV, broker.socket)
    with turnstile.connect(name="from-env") as c:
        assert c.socket == broker.socket
        assert c.hello.peer.client_name == "from-env"
        assert c.hello.peer.pid == os.getpid()
        assert c.hello.protocol_version == turnstile.PROTOCOL_VERSION
