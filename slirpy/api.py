"""Control socket: slirp4netns's JSON API on a UNIX socket, byte for byte.

Protocol (as slirp4netns 1.2 speaks it, checked against the real binary): one request per
connection. The client writes one JSON object and (usually) shuts down its write side; the
server answers with one compact JSON object, no newline, and closes. Requests:

    {"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0",
     "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}}  -> {"return":{"id":1}}
    {"execute": "list_hostfwd"}  -> {"entries":[{"id":1,"proto":"tcp","host_addr":"0.0.0.0",
                                    "host_port":8080,"guest_addr":"10.0.2.100","guest_port":80}]}
    {"execute": "remove_hostfwd", "arguments": {"id": 1}}  -> {"return":{}}

(`list_hostfwd` answers without a "return" wrapper: that is what slirp4netns sends.) Errors
are {"error":{"desc":"bad request: ..."}} with slirp4netns's descriptions; where slirp4netns
says only "slirp_add_hostfwd failed", we say why (address in use, privileged port, ...).
Ids count from 1 and are never reused. host_addr defaults to 0.0.0.0 and may also be IPv6
(an extension). guest_addr must be the sandbox's address: its IPv4 one, or (an extension) its
IPv6 one when IPv6 is on; it picks the family the clients reach the sandbox over (a client of
the other family appears as that family's gateway). Without it each client reaches the
sandbox over its own family, and `list_hostfwd` shows the address of the listener's family.

Router requests (issue 15, slirpy's own): `{"execute": "set_routes", "arguments": {"prefixes":
["10.89.0.0/24", "fd89:0:0:1::/64"]}}` replaces the prefixes routed behind the guest, and
`{"execute": "set_names", "arguments": {"views": {"10.89.0.2": {"db": ["10.89.0.3"]}},
"domains": ["front", "back"]}}` replaces the DNS name views (both answer {"return":{}}, or
an error naming the bad value); with routes set, add_hostfwd's guest_addr may also be an
address inside a routed prefix (a member of a network behind the guest).

The server knows only a small `Controller` (add / list / remove forwards), never the Stack.
Each "execute" name maps to one handler function in `HANDLERS`; adding a request (a future
`stats` or `flows`) is one function and one entry there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import stat
from collections.abc import Collection
from typing import Any, Awaitable, Callable, Coroutine, Protocol, cast

from .config import PortSpec
from .control import RuntimeControl  # noqa: F401  (runtime.start_control: the API's view of a runtime)

MAX_REQUEST = 4096          # slirp4netns's buffer: a request this long is "too large message"
REQUEST_TIMEOUT = 5.0       # seconds to wait for a complete request


class Controller(Protocol):
    guest_addr: str                 # the sandbox's IPv4 address
    guest_addr6: str | None         # its IPv6 address; None with IPv6 off

    async def add_forward(self, spec: PortSpec) -> int:
        """Publish `spec`; return its id. Raise an exception whose str() says why not."""

    def list_forwards(self) -> list[tuple[int, PortSpec]]: ...

    def remove_forward(self, forward_id: int) -> bool: ...

    def auto_forward_ids(self) -> Collection[int]:
        """The ids `-p auto` published (list_hostfwd adds "auto": true to their entries)."""

    def stats(self) -> dict:
        """Counters and table sizes (`slirpy stats`)."""

    def flows(self) -> list[dict]:
        """One row per live flow (`slirpy flows`)."""

    def pcap_start(self, path: str, max_size: int) -> dict:
        """Start a capture (pcap.py); raise an exception whose str() says why not."""

    def pcap_stop(self) -> dict | None:
        """Stop the capture; what it wrote, or None if none ran."""

    def set_routes(self, prefixes: list) -> None:
        """Replace the routed prefixes; raise ValueError naming the bad value."""

    def set_names(self, views: dict, domains: list) -> None:
        """Replace the DNS name views; raise ValueError naming the bad value."""

    def routes_to(self, ip: bytes) -> bool:
        """Whether packed `ip` is inside a routed prefix (a guest_addr add_hostfwd takes)."""


class ApiError(Exception):
    """A request that gets an {"error": {"desc": ...}} reply."""


def encode(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def error_reply(desc: str) -> dict:
    return {"error": {"desc": desc}}


def _number(args: dict, name: str) -> int:
    """slirp4netns's json_object_dotget_number + (int): non-numbers read as 0."""
    v = args.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return 0
    try:
        return int(v)
    except (OverflowError, ValueError):
        return 0


def _string(args: dict, name: str) -> str | None:
    v = args.get(name)
    return v if isinstance(v, str) else None


# ------------------------------------------------------------------ handlers


async def _add_hostfwd(ctl: Controller, req: dict) -> dict:
    def bad(what: str) -> ApiError:
        return ApiError(f"bad request: add_hostfwd: bad arguments.{what}")

    args = req.get("arguments")
    if not isinstance(args, dict):
        args = {}
    proto = _string(args, "proto")
    if proto not in ("tcp", "udp"):
        raise bad("proto")
    host_addr = _string(args, "host_addr") or "0.0.0.0"
    try:
        host_addr = str(ipaddress.ip_address(host_addr))
    except ValueError:
        raise bad("host_addr") from None
    host_port = _number(args, "host_port")
    if not 0 < host_port < 65536:
        raise bad("host_port")
    guest_addr = _guest_addr(ctl, _string(args, "guest_addr"))
    guest_port = _number(args, "guest_port")
    if not 0 < guest_port < 65536:
        raise bad("guest_port")
    try:
        fid = await ctl.add_forward(PortSpec(proto, host_addr, host_port, guest_port, guest_addr))
    except Exception as e:          # the controller's reason, e.g. PortError
        raise ApiError(f"bad request: add_hostfwd: {e}") from None
    return {"return": {"id": fid}}


def _guest_addr(ctl: Controller, text: str | None) -> str | None:
    """add_hostfwd's guest_addr: one of the sandbox's addresses (canonical), or None if absent."""
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is None or (ip not in {ipaddress.ip_address(a) for a in (ctl.guest_addr, ctl.guest_addr6) if a}
                      and not ctl.routes_to(ip.packed)):
        raise ApiError("bad request: add_hostfwd: bad arguments.guest_addr")
    return str(ip)


def shown_guest_addr(ctl: Controller, spec: PortSpec) -> str:
    """The guest address list_hostfwd shows: the forward's own, else the listener family's."""
    if spec.guest_addr is not None:
        return spec.guest_addr
    if ":" in spec.host_addr and ctl.guest_addr6 is not None:
        return ctl.guest_addr6
    return ctl.guest_addr


async def _list_hostfwd(ctl: Controller, req: dict) -> dict:
    auto = ctl.auto_forward_ids()
    return {"entries": [
        {"id": fid, "proto": s.proto, "host_addr": s.host_addr, "host_port": s.host_port,
         "guest_addr": shown_guest_addr(ctl, s), "guest_port": s.guest_port,
         **({"auto": True} if fid in auto else {})}     # slirpy's: only on -p auto entries
        for fid, s in ctl.list_forwards()
    ]}


async def _remove_hostfwd(ctl: Controller, req: dict) -> dict:
    args = req.get("arguments")
    fid = _number(args, "id") if isinstance(args, dict) else 0
    if not ctl.remove_forward(fid):
        raise ApiError("bad request: remove_hostfwd: bad arguments.id")
    return {"return": {}}


async def _stats(ctl: Controller, req: dict) -> dict:
    return {"return": ctl.stats()}


async def _flows(ctl: Controller, req: dict) -> dict:
    return {"return": {"flows": ctl.flows()}}


async def _pcap_start(ctl: Controller, req: dict) -> dict:
    from .pcap import DEFAULT_MAX_SIZE, parse_size

    args = req.get("arguments")
    if not isinstance(args, dict):
        args = {}
    path = _string(args, "path")
    if not path:
        raise ApiError("bad request: pcap_start: bad arguments.path")
    size = args.get("max_size", DEFAULT_MAX_SIZE)
    try:
        max_size = parse_size(size) if isinstance(size, (int, str)) else -1
    except ValueError:
        max_size = -1
    if max_size < 0:
        raise ApiError("bad request: pcap_start: bad arguments.max_size")
    try:
        return {"return": ctl.pcap_start(path, max_size)}
    except OSError as e:
        raise ApiError(f"bad request: pcap_start: cannot write {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ApiError(f"bad request: pcap_start: {e}") from None


async def _pcap_stop(ctl: Controller, req: dict) -> dict:
    info = ctl.pcap_stop()
    if info is None:
        raise ApiError("bad request: pcap_stop: no capture is running")
    return {"return": info}


async def _set_routes(ctl: Controller, req: dict) -> dict:
    args = req.get("arguments")
    prefixes = args.get("prefixes") if isinstance(args, dict) else None
    if not isinstance(prefixes, list):
        raise ApiError("bad request: set_routes: bad arguments.prefixes: a list of prefixes")
    try:
        ctl.set_routes(prefixes)
    except ValueError as e:
        raise ApiError(f"bad request: set_routes: bad arguments.prefixes: {e}") from None
    return {"return": {}}


async def _set_names(ctl: Controller, req: dict) -> dict:
    args = req.get("arguments")
    if not isinstance(args, dict):
        args = {}
    views, domains = args.get("views", {}), args.get("domains", [])
    if not isinstance(views, dict):
        raise ApiError("bad request: set_names: bad arguments.views: an object of querier "
                       "address -> {name: [addresses]}")
    if not isinstance(domains, list):
        raise ApiError("bad request: set_names: bad arguments.domains: a list of names")
    try:
        ctl.set_names(views, domains)
    except ValueError as e:
        raise ApiError(f"bad request: set_names: bad arguments.{e}") from None
    return {"return": {}}


Handler = Callable[[Controller, dict], Awaitable[dict]]

HANDLERS: dict[str, Handler] = {
    "add_hostfwd": _add_hostfwd,
    "list_hostfwd": _list_hostfwd,
    "remove_hostfwd": _remove_hostfwd,
    # slirpy's own, read-only: not in slirp4netns
    "stats": _stats,
    "flows": _flows,
    # slirpy's own packet capture (pcap.py)
    "pcap_start": _pcap_start,
    "pcap_stop": _pcap_stop,
    # slirpy's own router control (networks, issue 15)
    "set_routes": _set_routes,
    "set_names": _set_names,
}


def parse_request(raw: bytes) -> dict:
    """The request object, or ApiError with slirp4netns's description. Like its JSON parser,
    text after the first complete value is ignored."""
    try:
        text = raw.decode()
        obj, _ = json.JSONDecoder().raw_decode(text.lstrip())
    except (UnicodeDecodeError, ValueError):
        raise ApiError("bad request: cannot parse JSON") from None
    if not isinstance(obj, dict):
        raise ApiError("bad request: json_object() failed")
    if not isinstance(obj.get("execute"), str):
        raise ApiError("bad request: no execute found")
    return obj


async def handle(ctl: Controller, raw: bytes, handlers: dict[str, Handler] = HANDLERS) -> bytes:
    """One request's bytes in, the reply's bytes out."""
    try:
        if len(raw) >= MAX_REQUEST:
            raise ApiError("bad request: too large message")
        req = parse_request(raw)
        handler = handlers.get(req["execute"])
        if handler is None:
            raise ApiError("bad request: unknown execute")
        reply = await handler(ctl, req)
    except ApiError as e:
        reply = error_reply(str(e))
    return encode(reply)


def _complete(raw: bytes) -> bool:
    try:
        json.JSONDecoder().raw_decode(raw.decode().lstrip())
    except (UnicodeDecodeError, ValueError):
        return False
    return True


# ------------------------------------------------------------------ server


class _ApiConnection(asyncio.Protocol):
    def __init__(self, server: "ApiServer"):
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.done = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)     # a stream server's
        self.timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self._answer)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.buf += data
        if len(self.buf) >= MAX_REQUEST or _complete(bytes(self.buf)):
            self._answer()

    def eof_received(self) -> bool:
        self._answer()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.done = True

    def _answer(self) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        self.server.spawn(self._reply(bytes(self.buf)))

    async def _reply(self, raw: bytes) -> None:
        reply = await handle(self.server.controller, raw, self.server.handlers)
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(reply)
            t.close()


def bind_socket(path: str) -> socket.socket:
    """Bind the API socket (replacing a stale socket file, as slirp4netns does; never any
    other kind of file). Raises OSError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(17, f"{path} exists and is not a socket")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class ApiServer:
    """Serves `controller` on a bound UNIX socket (see `bind_socket`)."""

    def __init__(self, controller: Controller, path: str, handlers: dict[str, Handler] | None = None):
        self.controller = controller
        self.path = path
        self.handlers = dict(HANDLERS if handlers is None else handlers)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _ApiConnection(self), sock=sock)

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            try:
                os.unlink(self.path)
            except OSError:
                pass
        for task in list(self._tasks):
            task.cancel()


# ------------------------------------------------------------------ client


def request(path: str, obj: dict, timeout: float = 10.0) -> dict:
    """Send one request to an API socket (ours or slirp4netns's) and return the decoded reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(obj).encode())
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    raw = b"".join(chunks)
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(f"unreadable reply from {path}: {raw[:200]!r}") from None
