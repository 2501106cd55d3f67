"""tests/hostns: tests that must run in the machine's own network namespace.

RootlessKit maps the user's subuid range with newuidmap, which refuses to work inside
helpers/testns (a user namespace whose root is the unprivileged user), so these tests cannot
run there.  helpers/test runs this directory as a second pytest step, outside testns.  This
conftest deliberately does NOT re-execute into testns; instead it keeps the tests on host
loopback:

- inside helpers/testns (plain `pytest` from the root re-executes there when netns tests are
  collected) every test here is skipped with a reason that says where it runs;
- every AF_INET connect/sendto/bind made by the test process must use 127.0.0.1 (or a
  wildcard bind), and every guest script must name no IPv4 address except 127.0.0.1 and the
  sandbox's own 10.0.2.x addresses: anything else fails the test at once (`guard_script`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket

import pytest

ALLOWED_HOST = "127.0.0.1"
ALLOWED_IN_SCRIPTS = {"127.0.0.1", "0.0.0.0", "10.0.2.2", "10.0.2.100"}
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")


class ForbiddenAddress(AssertionError):
    pass


def guard_script(text: str) -> str:
    """Return `text` if it names only allowed IPv4 addresses; fail loudly otherwise."""
    for found in _IPV4.findall(text):
        if found not in ALLOWED_IN_SCRIPTS:
            raise ForbiddenAddress(f"hostns test script names {found}: only {sorted(ALLOWED_IN_SCRIPTS)} "
                                   "may appear (this runs in the real network namespace)")
    return text


def _check(addr, what: str, wildcard_ok: bool = False) -> None:
    if not isinstance(addr, tuple) or not addr:
        return                                   # AF_UNIX paths and the like
    host = addr[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ForbiddenAddress(f"hostns test: {what} to host name {host!r}; use {ALLOWED_HOST}") from None
    if str(ip) == ALLOWED_HOST or (wildcard_ok and ip.is_unspecified):
        return
    raise ForbiddenAddress(f"hostns test: {what} {host} — only {ALLOWED_HOST} is allowed here")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sendto, real_bind = socket.socket.sendto, socket.socket.bind

    def connect(self, addr):
        if self.family == socket.AF_INET or self.family == socket.AF_INET6:
            _check(addr, "connect")
        return real_connect(self, addr)

    def connect_ex(self, addr):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(addr, "connect")
        return real_connect_ex(self, addr)

    def sendto(self, data, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(args[-1], "sendto")
        return real_sendto(self, data, *args)

    def bind(self, addr):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _check(addr, "bind", wildcard_ok=False)
        return real_bind(self, addr)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    monkeypatch.setattr(socket.socket, "bind", bind)
    yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SLIRPY_TESTNS") != "1":
        return
    here = os.path.dirname(os.path.abspath(__file__))
    skip = pytest.mark.skip(reason="host-namespace test (RootlessKit needs the real subuid mapping): "
                                   "helpers/test runs tests/hostns in a second step outside helpers/testns")
    for item in items:
        if str(item.path).startswith(here + os.sep):
            item.add_marker(skip)
