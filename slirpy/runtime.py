"""Runtime: one event loop that joins the TAP, the pure Stack and the host sockets.

After any input fires — frames readable on the TAP, a host socket callback, the timer —
the runtime flushes: frames from the Stack go to the TAP, the Stack's events become host
socket calls, and the one timer is re-armed at `stack.next_deadline()`. Host callbacks ask
for a flush with `request_flush()`, coalesced into one `call_soon` per loop iteration, so
many sockets' data leaves in one batch; host TCP reads say `host_data_read()`, which flushes at
once when more than FLUSH_AFTER_BYTES of several flows have piled up (still in the caches).

UDP flows and ICMP echo flows get one non-blocking host socket each (proxy/udp.py,
proxy/icmp.py), watched with `add_reader`. Flows the Stack marks `dns` (network+3 port 53)
are pointed at the upstream resolver: `--dns-upstream`, else the host's resolv.conf
nameservers, re-read when that file changes (resolvconf.py), the next asked when one does not
answer (proxy/dns.py).

Published ports (ports.py) and the API socket (api.py): `prepare_ports(specs, api_socket)`
binds them synchronously after the sandbox was forked and before the loop runs (so errors
come out at start, and the sandbox never inherits a listener); `serve.serve_sandbox` starts
serving them before the command is released. Their clients become inbound Stack flows whose events
are dispatched exactly like outbound ones.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import os
import random
import select
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Final, Iterable

from . import doctor
from . import pcap as _pcap
from . import ports as _ports
from .proxy import dns as dns_proxy
from .proxy import dnstcp
from .proxy import icmp as icmp_proxy
from .proxy import tcp as tcp_proxy
from .proxy import udp as udp_proxy
from .proxy.host import TcpFlowSocket, UdpFlowSocket, remove_reader
from .hostres import (  # noqa: F401  (FD_RESERVE, fit_limits_to_fds: used by tests)
    FD_RESERVE, IDLE_CHECK, fit_limits_to_fds, open_fds, raise_nofile_limit, tune_malloc,
)
from .busypoll import BusyPoller
from .resolvconf import ResolvConf
from .serve import ServedCommand, serve_sandbox  # noqa: F401  (their old home: callers import them here)
if TYPE_CHECKING:
    from .api import ApiServer
    from .autoports import AutoPorts
    from .config import NetConfig, PortSpec
    from .impair import ImpairSpec
    from .impair import FrameLink
from .tcpip.tcp.state import TcpState
from .tcpip.events import (
    IcmpEchoFlowClosed, IcmpEchoFlowOpened, IcmpEchoRequested, StackEvent, TcpConnectRequested,
    TcpDataReceived, TcpEofReceived, TcpFlowClosed, TcpHostReadPaused, UdpDatagramReceived,
    UdpFlowClosed, UdpFlowOpened,
)
from .tcpip.stack import Stack

log: Final = logging.getLogger("slirpy")

# Module functions the per-frame path calls, as compiled constants: a `time.monotonic` in
# compiled code is an attribute lookup on the module every time (perf/NOTES.md, session 11).
_monotonic: Final = time.monotonic
_os_write: Final = os.write
_os_writev: Final = os.writev

# The host reads of one loop pass pile up until its flush writes them to the TAP. With many
# downloads a pass reads ~100 sockets, ~20 MB, first, and the TAP writes then copy data long
# gone from the CPU's caches. Past this many bytes read from more than one flow since the last
# flush, the runtime flushes at once (perf/NOTES.md, session 18). One flow's reads are left to
# the pass's flush: they are one socket's, bounded by its share of the send buffers.
FLUSH_AFTER_BYTES: Final = 1 << 20
_NO_FLOW: Final = -1
_SEVERAL_FLOWS: Final = -2


def _not_attached(*_args: object) -> object:
    raise AssertionError("Runtime.attach() not called")


_READ_SIZE: Final = 65600          # a whole 64 KB GSO super-frame + headers; never read 256 KB (DESIGN §3)
_READ_BATCH: Final = 256           # frames per readable event before flushing
# States in which the guest may still send data on a TCP flow.
_GUEST_MAY_SEND: Final = frozenset((TcpState.SYN_RECEIVED, TcpState.ESTABLISHED,
                                    TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2))


class Runtime:
    def __init__(self, config: NetConfig, tap_fd: int, *, vnet_hdr: bool, offload: bool,
                 impair: ImpairSpec | None = None, busy_poll_us: int | None = None) -> None:
        # Every flow holds one host fd: raise the soft RLIMIT_NOFILE to the hard one and keep
        # the flow caps below it, so a flood is refused by our limits, never by EMFILE.
        nofile = raise_nofile_limit()
        limits = fit_limits_to_fds(config.limits, nofile)
        if limits is not config.limits:
            log.debug("flow limits lowered to fit RLIMIT_NOFILE %d: %s", nofile, limits)
            config = config.replace(limits=limits)
        self.config = config
        self.tap_fd = tap_fd
        # TAP reads through FileIO: its read() returns None at EAGAIN where os.read raises, and
        # every batch ends at EAGAIN (an exception per batch is most of the read's cost).
        self._tap_reader = io.FileIO(tap_fd, "rb", closefd=False)
        # ... but FileIO still builds (and drops) an OSError at EAGAIN, strerror text and all:
        # ~4k instructions, 7 % of a ping-pong round. After a batch's first frame, a zero-timeout
        # epoll_wait on the TAP alone says whether to read on (perf/NOTES.md, session 11).
        self._tap_ready = select.epoll()
        self._tap_ready.register(tap_fd, select.EPOLLIN)
        self.stack = Stack(config, vnet_hdr=vnet_hdr, offload=offload,
                           rng=random.Random(int.from_bytes(os.urandom(8), "big")))
        # Frames between the TAP and the Stack go through `link`: the Stack itself, or link
        # filters wrapping it (impairment; pcap.py adds a capture at run time); everything else goes to the Stack directly.
        self.link: FrameLink = self.stack
        if impair is not None:
            from .impair import ImpairedLink, Impairment
            self.link = ImpairedLink(self.stack, Impairment(impair, vnet_hdr=vnet_hdr,
                                                            counters=self.stack.counters))
        self.host_flows: dict[int, TcpFlowSocket] = {}
        self.host_tcp_open = 0          # host TCP sockets open: connection_made .. connection_lost
        self.recv_blocks = tcp_proxy.RecvBlocks()     # where host TCP reads land
        self.connecting: dict[int, asyncio.Task] = {}
        self.udp_flows: dict[int, UdpFlowSocket] = {}
        self.echo_flows: dict[int, icmp_proxy.HostEchoFlow] = {}
        # Flows whose host socket could not be opened/routed: errno, re-reported per packet;
        # for echo flows the ICMP (type, code) the guest gets for each request (None: nothing).
        self.failed_flows: dict[int, int] = {}
        self.failed_echoes: dict[int, tuple[int, int] | None] = {}
        self.counters = self.stack.counters
        self.resolv = ResolvConf(config.resolv_conf)
        self.ping_warned = False
        self._malloc_trim = tune_malloc()
        self._idle_mark: tuple[int, int] | None = None
        self._trimmed = True
        self._idle_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False
        self._unflushed_bytes = 0          # host bytes read since the last flush (host_data_read)
        self._unflushed_flow = _NO_FLOW    # from which flow, or _SEVERAL_FLOWS
        # Bound once (attach sets the first): request_flush runs per host read, and made a
        # bound method and looked the loop's method up each time.
        self._call_soon: Callable[..., object] = _not_attached
        self._flush_cb: Callable[[], None] = self._scheduled_flush
        self.poller = BusyPoller(busy_poll_us, self.counters)   # after each flush: poll or sleep
        self._poll_on = self.poller.window.max_s > 0.0          # off (the default): no call at all
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.tap_gone = False          # the TAP device went away (its namespace was torn down)
        self.linger = 5.0              # seconds to let flows finish after the command exited
        self._dispatch = self._dispatch_table()
        self.ports = _ports.PortManager(self, str(config.guest),
                                        str(config.guest6) if config.ipv6 else None)
        self.api: ApiServer | None = None
        self._pending_listeners: list = []
        self._pending_api: tuple[str, Any] | None = None       # (path, bound socket)
        self.autoports: AutoPorts | None = None     # -p auto; launch.run_sandbox sets it
        self.fd_dir: int | None = None      # /proc/self/fd kept open by harden.py (no /proc then)
        self.hardened: object = None        # harden.py: what the process must keep alive

    # -------------------------------------------------------------- published ports / API

    def prepare_ports(self, specs: Iterable[PortSpec] = (), api_socket: str | None = None) -> list[PortSpec]:
        """Bind the published ports' listeners and the API socket now, before the loop runs
        (and after the sandbox was forked: it must not inherit them). Returns the specs as
        bound (free host ports filled in). Raises ports.PortError, or OSError for the API
        socket; nothing stays bound then."""
        bound = _ports.bind_all(specs)
        if api_socket is not None:
            from . import api as _api
            try:
                self._pending_api = (api_socket, _api.bind_socket(api_socket))
            except OSError:
                for _, sock in bound:
                    sock.close()
                raise
        self._pending_listeners = bound
        return [spec for spec, _ in bound]

    async def start_control(self) -> None:
        """Serve the listeners and the API socket bound by `prepare_ports`."""
        pending, self._pending_listeners = self._pending_listeners, []
        if pending or self._pending_api is not None:
            # Learn the guest's MAC before a published port's first client needs it.
            self.stack.probe_guest(time.monotonic())
            self.request_flush()
        for spec, sock in pending:
            await self.ports.adopt(spec, sock)
        if self._pending_api is not None:
            from . import api as _api      # imported (with control.py) by prepare_ports: before hardening
            path, sock = self._pending_api
            self._pending_api = None
            api = self.api = _api.ApiServer(_api.RuntimeControl(self), path)  # type: ignore[arg-type]
            await api.start(sock)
        if self.autoports is not None:
            self.autoports.start(self.loop)

    # -------------------------------------------------------------- loop wiring

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the runtime was attached to (only valid after `attach`)."""
        assert self._loop is not None, "Runtime.attach() not called"
        return self._loop

    def dns_upstream(self) -> tuple[str, int]:
        """Where DNS to network+3 goes right now."""
        if self.config.dns_upstream is not None:
            return self.config.dns_upstream
        return self.resolv.upstream()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._call_soon = loop.call_soon
        self.poller.attach(loop.call_soon)
        os.set_blocking(self.tap_fd, False)
        loop.add_reader(self.tap_fd, self._on_tap_readable)
        if self._malloc_trim is not None:
            self._idle_handle = loop.call_later(IDLE_CHECK, self._idle_check)

    def _idle_check(self) -> None:
        """Every IDLE_CHECK s: after a quiet interval, hand freed heap memory back to the OS."""
        c = self.counters
        mark = (c.get("rx.frames", 0), c.get("tcp.tx.segments", 0))
        if mark != self._idle_mark:
            self._idle_mark = mark
            self._trimmed = False
        elif not self._trimmed and self._malloc_trim is not None:
            self._trimmed = True
            self._malloc_trim()
            c["runtime.malloc_trim"] += 1
        if self._loop is not None and not self._loop.is_closed():
            self._idle_handle = self._loop.call_later(IDLE_CHECK, self._idle_check)

    def busy(self) -> bool:
        """Whether some flow may still carry data: the guest has not finished sending on it,
        or the host socket has not written out what the guest sent."""
        for flow in self.stack.flows():
            if flow.conn.state in _GUEST_MAY_SEND:
                return True
        for proto in self.host_flows.values():
            t = proto.transport
            if t is not None and not proto.closed and t.get_write_buffer_size():
                return True
        return False

    async def drain(self, timeout: float) -> None:
        loop = self.loop
        deadline = loop.time() + timeout
        while not self.tap_gone and self.busy() and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def detach(self) -> None:
        loop = self._loop
        if loop is None:
            return
        remove_reader(loop, self.tap_fd)
        self._tap_ready.close()
        if self._timer is not None:
            self._timer.cancel()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        if self.api is not None:
            self.api.close()
            self.api = None
        _pcap.stop_capture(self)            # flush and close a running capture
        if self.autoports is not None:
            self.autoports.stop()
        self.ports.close_all()
        for task in list(self.connecting.values()):
            task.cancel()
        finished = {f.flow_id for f in self.stack.flows() if f.conn.state not in _GUEST_MAY_SEND}
        for flow_id, proto in list(self.host_flows.items()):
            # A flow whose guest side finished ends with a FIN on the host side, others with RST.
            proto.close(reset=flow_id not in finished)
        self.host_flows.clear()
        flows: list[UdpFlowSocket | icmp_proxy.HostEchoFlow] = [*self.udp_flows.values()]
        for flow in [*flows, *self.echo_flows.values()]:
            flow.close()
        self.udp_flows.clear()
        self.echo_flows.clear()

    # ------------------------------------- FlowHost (proxy/host.py; + stack, counters, loop...)

    def request_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._call_soon(self._flush_cb)

    def host_data_read(self, flow_id: int, nbytes: int) -> None:
        n = self._unflushed_bytes = self._unflushed_bytes + nbytes
        if self._unflushed_flow != flow_id:
            self._unflushed_flow = flow_id if self._unflushed_flow == _NO_FLOW else _SEVERAL_FLOWS
        if n >= FLUSH_AFTER_BYTES and self._unflushed_flow == _SEVERAL_FLOWS:
            self.counters["loop.flush.early"] += 1
            self.flush(_monotonic())
        else:
            self.request_flush()

    def register_tcp_flow(self, flow_id: int, flow: TcpFlowSocket) -> None:
        self.host_flows[flow_id] = flow

    def unregister_tcp_flow(self, flow_id: int) -> None:
        self.host_flows.pop(flow_id, None)

    def register_udp_flow(self, flow_id: int, flow: UdpFlowSocket) -> None:
        self.udp_flows[flow_id] = flow

    def tcp_socket_opened(self) -> None:
        self.host_tcp_open += 1

    def tcp_socket_closed(self) -> None:
        self.host_tcp_open -= 1

    def bind_address_for(self, host: str) -> str | None:
        return self.config.bind_address_for(host)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush(_monotonic())

    def _on_tap_readable(self) -> None:
        now = _monotonic()
        fd = self.tap_fd
        receive = self.link.receive_frame
        read = self._tap_reader.read
        nbytes = 0
        for i in range(_READ_BATCH):
            try:
                frame: bytes | None = read(_READ_SIZE)     # None: nothing left (EAGAIN)
            except OSError as e:
                if e.errno == errno.EBADFD:      # tap0 was unregistered with its namespace
                    self.tap_gone = True
                    remove_reader(self.loop, fd)
                else:
                    self.counters["tap.rx.error"] += 1
                    log.debug("TAP read failed: %s", e)
                break
            if not frame:
                break
            nbytes += len(frame)
            receive(frame, now)
            if i == 0 and not self._tap_ready.poll(0, 1):
                break                   # the usual case of a request/response: one frame
        self.flush(now, nbytes)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = _monotonic()
        self.stack.handle_timer(now)
        self.flush(now)

    # -------------------------------------------------------------- the flush

    def flush(self, now: float, nbytes: int = 0) -> None:
        """Everything the stack has for the TAP and the host, after work that began at `now`
        (and read `nbytes` from the TAP)."""
        self._unflushed_bytes = 0
        self._unflushed_flow = _NO_FLOW
        stack = self.stack
        link = self.link
        plain = link is stack               # no link filter: a native call, no bound method
        dispatch = self._dispatch
        fd = self.tap_fd
        write = _os_write
        writev = _os_writev
        sent = 0
        for _ in range(64):
            frames = stack.frames_to_send(now) if plain else link.frames_to_send(now)
            # Host-side work first: a guest's request reaches the host socket before we spend
            # time writing ACKs or other frames to the TAP.
            ev = stack.next_event()
            while ev is not None:
                if type(ev) is TcpDataReceived:
                    ev = self._write_host(ev)
                elif type(ev) is UdpDatagramReceived:
                    ev = self._send_udp(ev)
                else:
                    dispatch[type(ev)](ev)
                    ev = stack.next_event()
            for f in frames:
                try:
                    if type(f) is bytes:
                        sent += write(fd, f)
                    else:
                        sent += writev(fd, f)
                except BlockingIOError:
                    self.counters["tap.tx.drop.full"] += 1
                except OSError as e:
                    self.counters["tap.tx.error"] += 1
                    log.debug("TAP write failed: %s", e)
            if not stack.has_output():
                break
        if self._poll_on:
            self.poller.after_work(now, nbytes + sent)
        deadline = self.link.next_deadline()
        armed = self._timer_at
        # Re-arm only for an earlier deadline. A later one (every ACK pushes the RTO back) keeps
        # the armed timer: when it fires early, handle_timer finds nothing due and this re-arms.
        if deadline is not None and (armed is None or deadline < armed):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_later(max(0.0, deadline - _monotonic()), self._on_timer)

    def _write_host(self, ev: TcpDataReceived) -> StackEvent | None:
        """Write `ev` and the data events right after it for the same flow (one per guest
        segment, about ten per TAP batch in a bulk upload) to the host socket together, as
        one writev instead of a send each. Returns the first event not written; when that is
        the flow's EOF, the socket is corked first, so the data and the FIN leave together."""
        stack = self.stack                  # stack.next_event(): a native call, no bound method
        fid = ev.flow_id
        nxt = stack.next_event()
        parts = None
        while type(nxt) is TcpDataReceived and nxt.flow_id == fid:
            if parts is None:
                parts = [ev.data]
            parts.append(nxt.data)
            nxt = stack.next_event()
        proto = self.host_flows.get(fid)
        if proto is not None:
            transport = proto.transport
            if transport is not None and not proto.closed:
                if (type(nxt) is TcpEofReceived and nxt.flow_id == fid
                        and tcp_proxy.cork_before_eof(transport)):   # the data and FIN together
                    self.counters["tcp.host.fin_corked"] += 1
                if parts is None:
                    transport.write(ev.data)
                else:
                    transport.writelines(parts)
        return nxt

    def _send_udp(self, ev: UdpDatagramReceived) -> StackEvent | None:
        """Hand `ev` and the datagram events right after it for the same flow (a burst the
        guest sent, read in one TAP batch) to the flow together: proxy/udp.py sends a run of
        equal-sized ones as one UDP GSO send. Returns the first event not handled."""
        stack = self.stack
        fid = ev.flow_id
        parts = [ev.data]
        nxt = stack.next_event()
        while type(nxt) is UdpDatagramReceived and nxt.flow_id == fid:
            parts.append(nxt.data)
            nxt = stack.next_event()
        flow = self.udp_flows.get(fid)
        if flow is None:
            for _ in parts:
                self._udp_without_socket(fid)
        elif len(parts) == 1:
            flow.send(ev.data)
        else:
            flow.send_many(parts)
        return nxt

    def _dispatch_table(self) -> dict[type[StackEvent], Callable[[Any], None]]:
        """Event type -> handler. TcpDataReceived and UdpDatagramReceived have none: flush()
        routes them to _write_host (a flow's consecutive data events as one write) and
        _send_udp (a flow's consecutive datagrams handed over together)."""
        return {
            UdpFlowOpened: self._on_udp_opened,
            UdpFlowClosed: self._on_udp_closed,
            IcmpEchoRequested: self._on_echo_requested,
            IcmpEchoFlowOpened: self._open_echo,
            IcmpEchoFlowClosed: self._on_echo_closed,
            TcpConnectRequested: self._on_tcp_connect,
            TcpEofReceived: self._on_tcp_eof,
            TcpHostReadPaused: self._on_tcp_read_paused,
            TcpFlowClosed: self._on_tcp_closed,
        }

    def _udp_without_socket(self, flow_id: int) -> None:
        """A guest datagram on a flow whose host socket could not be opened: dropped, and the
        error (failed_flows) reported again to the guest."""
        self.counters["udp.host.tx.drop.no_socket"] += 1
        err = self.failed_flows.get(flow_id)
        if err is not None:
            self.stack.udp_host_error(flow_id, err, time.monotonic())

    def _on_udp_opened(self, ev: UdpFlowOpened) -> None:
        host, port = self.dns_upstream() if ev.dns else (ev.host, ev.port)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("udp %s:%d -> %s:%d open", ev.guest, ev.guest_port, host, port)
        try:
            self.udp_flows[ev.flow_id] = (dns_proxy.open_flow(self, ev.flow_id, dns_proxy.upstreams(
                self.config.dns_upstream, self.resolv), ev.guest) if ev.dns else
                udp_proxy.open_flow(self, ev.flow_id, host, port, ev.guest))
        except OSError as e:
            self.counters["udp.host.open_failed"] += 1
            self.failed_flows[ev.flow_id] = e.errno or errno.EHOSTUNREACH

    def _on_udp_closed(self, ev: UdpFlowClosed) -> None:
        self.failed_flows.pop(ev.flow_id, None)
        flow = self.udp_flows.pop(ev.flow_id, None)
        if flow is not None:
            flow.close()

    def _on_echo_requested(self, ev: IcmpEchoRequested) -> None:
        flow = self.echo_flows.get(ev.flow_id)
        if flow is not None:
            flow.send(ev.seq, ev.ttl, ev.data)
        else:
            self.stack.icmp_echo_dropped(ev.flow_id, "no_socket", time.monotonic())
            error = self.failed_echoes.get(ev.flow_id)
            if error is not None:
                self.stack.icmp_host_error(ev.flow_id, error[0], error[1], time.monotonic())

    def _on_echo_closed(self, ev: IcmpEchoFlowClosed) -> None:
        self.failed_echoes.pop(ev.flow_id, None)
        flow = self.echo_flows.pop(ev.flow_id, None)
        if flow is not None:
            flow.close()

    def _on_tcp_connect(self, ev: TcpConnectRequested) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("tcp %s:%d -> %s:%d connect", ev.guest, ev.guest_port, ev.host, ev.port)
        if ev.dns:      # local names, or several nameservers to fall back on: proxy/dnstcp.py
            servers = dns_proxy.upstreams(self.config.dns_upstream, self.resolv)
            if self.stack.has_names or len(servers) > 1:
                return dnstcp.serve(self, ev.flow_id, ev.guest, servers)
        host, port = self.dns_upstream() if ev.dns else (ev.host, ev.port)
        self.connecting[ev.flow_id] = self.loop.create_task(self._connect(ev.flow_id, host, port))

    async def _connect(self, flow_id: int, host: str, port: int) -> None:
        try:
            await tcp_proxy.connect(self, flow_id, host, port)
        finally:
            self.connecting.pop(flow_id, None)

    def _on_tcp_eof(self, ev: TcpEofReceived) -> None:
        proto = self.host_flows.get(ev.flow_id)
        if proto is not None and proto.transport is not None and not proto.closed:
            if proto.transport.can_write_eof():
                proto.transport.write_eof()

    def _on_tcp_read_paused(self, ev: TcpHostReadPaused) -> None:
        proto = self.host_flows.get(ev.flow_id)
        if proto is not None and proto.transport is not None and not proto.closed:
            if ev.paused:
                proto.transport.pause_reading()
            else:
                proto.transport.resume_reading()

    def _on_tcp_closed(self, ev: TcpFlowClosed) -> None:
        task = self.connecting.pop(ev.flow_id, None)
        if task is not None:
            task.cancel()
        proto = self.host_flows.pop(ev.flow_id, None)
        if proto is not None:
            proto.close(ev.reset)

    def _open_echo(self, ev: IcmpEchoFlowOpened) -> None:
        try:
            self.echo_flows[ev.flow_id] = icmp_proxy.open_flow(self, ev.flow_id, ev.host)
        except OSError as e:
            # Echoes on this flow are counted as dropped (icmp.echo.drop.no_socket) until it
            # expires; the next flow tries again (the sysctl may have been changed).
            self.counters["icmp.host.open_failed"] += 1
            self.failed_echoes[ev.flow_id] = icmp_proxy.open_error(ev.host, e.errno or 0)
            if e.errno in (errno.EACCES, errno.EPERM) and not self.ping_warned:
                self.ping_warned = True
                sys.stderr.write(f"slirpy: warning: {doctor.ping_denied_message()}\n")
                sys.stderr.flush()

    # -------------------------------------------------------------- stats

    def snapshot(self) -> dict:
        return {
            "counters": dict(sorted(self.counters.items())),
            "flows": {"tcp": len(self.stack.flows()), "tcp_half_open": self.stack.half_open,
                      "tcp_time_wait": self.stack.time_wait,
                      "udp": len(self.udp_flows), "icmp_echo": len(self.echo_flows),
                      "forwards": len(self.ports.forwards)},
            # What the process holds, counted from the sockets themselves rather than from
            # the flow tables, so that a socket no flow owns any more shows up here.
            "host_sockets": {"tcp": self.host_tcp_open, "tcp_connecting": len(self.connecting),
                             "udp": len(self.udp_flows), "icmp_echo": len(self.echo_flows),
                             "listeners": len(self.ports.forwards)},
            "fds": open_fds(self.fd_dir),
            "buffers": {"tcp_bytes_queued_to_guest": self.stack.snd_queued,
                        "tcp_receive_window_share": self.stack.rcv_share,
                        "recv_blocks_made": self.recv_blocks.allocated,
                        "recv_blocks_reused": self.recv_blocks.reused},
        }

    def write_stats(self, path: str) -> None:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.snapshot(), f, indent=1)
        os.replace(tmp, path)

