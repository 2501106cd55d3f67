"""The holder's namespaces: the keeper process that holds them, and running code inside them.

The KEEPER is `unshare --user --map-root-user --net --mount sleep infinity`, started in its
own session: a few hundred KiB of C that owns a user namespace (our uid mapped to 0) and a
network namespace, and nothing else. Every bridge, veth end, sysctl and nft rule of the
networks lives in that network namespace; the members' own network namespaces are created
inside that user namespace, so the kernel lets us move veth ends between them.

`in_holder(keeper_pid, fn, *args)` forks a child that joins the keeper's user and net
namespaces (setns, as sandbox/attach.py does for slirp4netns mode), runs `fn` there and sends
its JSON-able result (or its error, one line) back over a pipe: the router, `network inspect`
and a member's set-up use it for bridges (pyroute2), sysctls and nft.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any, Callable

from slirpy.sandbox.libc import CLONE_NEWNET, CLONE_NEWUSER, set_pdeathsig, setns

KEEPER_ARGV = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--", "sleep", "infinity"]
RESULT_MAX = 1 << 20


class HolderError(Exception):
    """Something in the holder's namespaces failed; str() is one line."""


def start_keeper(log_fd: int) -> int:
    """Start the keeper in a new session; its pid once its namespaces exist."""
    proc = subprocess.Popen(KEEPER_ARGV, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                            start_new_session=True, close_fds=True)
    own = os.readlink("/proc/self/ns/net")
    for _ in range(500):               # unshare execs sleep once the namespaces exist
        if proc.poll() is not None:
            raise HolderError(f"the network holder (unshare) exited at once with status {proc.returncode}")
        try:
            if os.readlink(f"/proc/{proc.pid}/ns/net") != own and _exe(proc.pid) == "sleep":
                return proc.pid
        except OSError:
            pass
        time.sleep(0.002)
    proc.kill()
    raise HolderError("the network holder did not start within 1 s")


def alive(pid: int, start: int) -> bool:
    from slirpy.registry import proc_start_time
    return proc_start_time(pid) == start


def _exe(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def in_holder(keeper_pid: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn(*args) in a child inside the keeper's user and net namespaces; its result.
    Raises HolderError with the child's one-line error."""
    return in_namespaces(keeper_pid, keeper_pid, fn, *args)


def in_namespaces(user_pid: int, net_pid: int, fn: Callable[..., Any], *args: Any) -> Any:
    """in_holder with the net namespace of another process (a member's, in the keeper's
    user namespace: `network connect`)."""
    user = os.open(f"/proc/{user_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    try:
        net = os.open(f"/proc/{net_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(user)
        raise

    def enter() -> None:  # pragma: no cover - the child
        set_pdeathsig(signal.SIGKILL)
        from slirpy.sandbox.libc import setns_fd
        setns_fd(user, CLONE_NEWUSER)
        setns_fd(net, CLONE_NEWNET)
    try:
        return in_child(fn, *args, enter=enter, error=HolderError,
                        died="the helper in the network holder died")
    finally:
        os.close(user)
        os.close(net)


def in_child(fn: Callable[..., Any], *args: Any, enter: Callable[[], None] | None = None,
             error: type[Exception] = OSError, died: str = "the helper process died") -> Any:
    """fn(*args) in a forked child (after `enter()` there, e.g. setns()); its JSON-able result,
    read back over a pipe (at most RESULT_MAX bytes). The child's exception comes back as
    `error` with its one-line text; a child that died without a word, as `error(died)`.
    The child never comes back into the caller's namespaces, so it may enter any."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            if enter is not None:
                enter()
            out = {"ok": fn(*args)}
        except BaseException as e:
            out = {"error": " ".join(str(e).split())[:1000] or type(e).__name__}
            code = 1
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    os.waitpid(pid, 0)
    try:
        out = json.loads(b"".join(chunks)[:RESULT_MAX])
    except ValueError:
        raise error(died) from None
    if "error" in out:
        raise error(out["error"])
    return out.get("ok")


# -- what runs inside (call through in_holder) ------------------------------------------------

def init_holder() -> None:
    """Forwarding on, lo up: once per keeper."""
    for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
        try:
            with open(path, "w") as f:
                f.write("1")
        except FileNotFoundError:
            pass                               # a kernel without IPv6
    bridged_traffic_skips_ip_hooks()
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


BRIDGE_NF_SYSCTLS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables")


def bridged_traffic_skips_ip_hooks() -> list[str]:
    """Frames a bridge switches between two members stay out of the IP hooks: with the
    kernel's br_netfilter (built in, or loaded by Docker) each new network namespace starts
    with bridge-nf-call-ip(6|arp)tables = 1, which runs `table inet slirpy` and conntrack on
    every member<->member packet; we turn that off in the holder (a per-namespace sysctl).
    Member<->member filtering that must stay (anti-spoofing) is in `table bridge slirpy`
    (nft.py), which costs no conntrack. Routed traffic (between networks, to and from tap0)
    still meets every inet rule. Called at each bridge sync too, in case br_netfilter was
    loaded after the holder started. Returns the sysctls it wrote (none without br_netfilter)."""
    done = []
    for name in BRIDGE_NF_SYSCTLS:
        try:
            with open(f"/proc/sys/net/bridge/{name}", "w") as f:
                f.write("0")
            done.append(name)
        except FileNotFoundError:
            pass                               # no br_netfilter: bridged frames skip IP hooks already
    return done


def bridge_address(bridge: str) -> str:
    """The fixed MAC address of bridge `sbr<index>`: locally administered, unicast, one per
    network (02, then 73:6c:62 spelling "slb", then the index in two bytes).

    Why fixed: a Linux bridge created without an address takes the lowest MAC of its ports, and
    takes another whenever a port with a lower one joins or the lowest one leaves. The members'
    ARP entries for their gateway then name a MAC the bridge no longer has: what they send
    off the network (to the router, to published-port clients) is flooded to the other ports
    and lost until the entry goes stale, ~30 s later. A member's veth leaving is the kernel's
    asynchronous teardown of its namespace, so this struck at random (the router-harden e2e
    test's published-port read timed out in about 1 run in 24). An address given at creation
    is kept (the kernel's NET_ADDR_SET)."""
    index = int(bridge.removeprefix("sbr"))
    return f"02:73:6c:62:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"


def sync_bridges(wanted: list[dict]) -> list[str]:
    """Make the bridges `sbr*` exactly `wanted` ([{"bridge", "gateway", "prefixlen",
    "gateway6"}]): create missing ones (with a fixed MAC address: `bridge_address`) with their
    gateway addresses, delete the others. Returns the names deleted."""
    from pyroute2 import IPRoute
    want = {w["bridge"]: w for w in wanted}
    deleted = []
    bridged_traffic_skips_ip_hooks()
    with IPRoute() as ipr:
        present = {link.get_attr("IFLA_IFNAME"): link["index"] for link in ipr.get_links()}
        for name, idx in present.items():
            if name.startswith("sbr") and name not in want:
                ipr.link("del", index=idx)
                deleted.append(name)
        for name, w in want.items():
            if name in present:
                continue
            ipr.link("add", ifname=name, kind="bridge", address=bridge_address(name))
            idx = ipr.link_lookup(ifname=name)[0]
            if w.get("gateway6"):
                _sysctl6(name, "accept_dad", "0")
            ipr.addr("add", index=idx, address=w["gateway"], prefixlen=w["prefixlen"])
            if w.get("gateway6"):
                ipr.addr("add", index=idx, address=w["gateway6"], prefixlen=64, flags=0x02)
            ipr.link("set", index=idx, state="up")
    return deleted


def _sysctl6(ifname: str, name: str, value: str) -> None:
    try:
        with open(f"/proc/sys/net/ipv6/conf/{ifname}/{name}", "w") as f:
            f.write(value)
    except OSError:
        pass


def apply_rules(script: str) -> None:
    from slirpy.networks import nft
    nft.apply(script)


def list_rules() -> list[dict]:
    from slirpy.networks import nft
    return nft.read_rules()
