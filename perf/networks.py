"""perf/bench's `networks` workload (issue 15): members of a slirpy network beside a plain
`slirpy run` and the kernel's own veth, in the same run.

In this workload the peer ``slirpy`` is a member of a network and ``slirpy-plain`` a plain
`slirpy run` (the reference for "as fast as a plain run"). Variants (each a row; the peers that
make sense in it run, the others are n/a):
  member<->member/up, member<->member/down
      iperf3 single stream (MTU 65520) from one member to another on the same network (down:
      -R). Peers: ``slirpy`` (the two members: veth - bridge - veth inside the holder's
      namespace, never through Python) and ``veth`` (one veth pair, kernel only: the reference;
      target >= 0.8x), and ``bridge`` (the kernel alone on the members' path: a bridge and two
      veth pairs, MTU 65520, in a throwaway ``unshare -Urn`` namespace, no slirpy, no nft and
      bridge-nf-call-* off: what a rootful Docker bridge costs without its iptables rules). The
      target keeps ``veth`` as its reference; slirpy/bridge shows what is ours (the holder's
      settings and rules) apart from what a bridge costs by itself (bridge/veth).
  member->host, host->member
      iperf3 to a server on the test host (203.0.113.1) from a member, and from the host through
      a member's published port (``-p 127.0.0.1:P:P``), against ``slirpy-plain``: target within
      10 % (member/plain >= 0.9).
  first-instruction
      ms from exec of ``slirpy run --network N -- CMD`` to CMD's first instruction while the
      network is already up (another member keeps it up), against ``slirpy-plain``;
      target <= 1.2x.
  idle-member
      memory added by each idle member: 8 members running ``sleep``, RSS and PSS summed over
      every slirpy process (the router, each member's ``slirpy run`` and its descendants but
      the command: its supervisor while it runs, the PID 1 of its PID namespace, whatever
      program they exec) minus the same sum with one member, divided by 7. Target: RSS <= 2 MiB.

Every sample runs with XDG_RUNTIME_DIR and XDG_DATA_HOME in the bench's scratch directory, so
the networks, the holder and its state are the bench's own and go away with it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
NET = "benchnet"
SUBNET = "10.89.200.0/24"
SERVER_IP = "10.89.200.10"      # the member that serves in member<->member
IDLE_MEMBERS = 8
VARIANTS = ["member<->member/up", "member<->member/down", "member->host", "host->member",
            "first-instruction", "idle-member"]
PLAIN = "slirpy-plain"
BRIDGE = "bridge"               # the kernel bridge + 2 veths, no slirpy (sample_bridge_pair)
PEERS_OF = {"member<->member/up": ("slirpy", "veth", BRIDGE),
            "member<->member/down": ("slirpy", "veth", BRIDGE),
            "member->host": ("slirpy", PLAIN), "host->member": ("slirpy", PLAIN),
            "first-instruction": ("slirpy", PLAIN), "idle-member": ("slirpy",)}


class NetworksError(RuntimeError):
    pass


def unavailable(variant: str, peer: str) -> str | None:
    if peer not in PEERS_OF.get(variant, ()):
        return "not in this row"
    return None


def xdg_env(tmp: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("XDG_RUNTIME_DIR", "XDG_DATA_HOME"):
        d = os.path.join(tmp, key.lower())
        os.makedirs(d, mode=0o700, exist_ok=True)
        env[key] = d
    return env


def slirpy_cli(tmp: str, *args: str, timeout: float = 60) -> str:
    r = subprocess.run([sys.executable, "-m", "slirpy", *args], env=xdg_env(tmp), cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise NetworksError(f"slirpy {' '.join(args)}: {(r.stderr or r.stdout).strip()[-300:]}")
    return r.stdout


def ensure_network(tmp: str) -> None:
    if NET not in slirpy_cli(tmp, "network", "ls"):
        slirpy_cli(tmp, "network", "create", "--subnet", SUBNET, NET)


def holder_state(tmp: str) -> dict:
    path = os.path.join(tmp, "xdg_runtime_dir", "slirpy", "holder.json")
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def router_pid(tmp: str) -> int | None:
    pid = holder_state(tmp).get("router_pid")
    return pid if isinstance(pid, int) else None


MEMBER_MTU = 65520              # a member has its network's MTU (`run --network` refuses --mtu)


def member_argv(mtu: int, ports: list[int], extra: list[str] = ()) -> list[str]:
    if mtu != MEMBER_MTU:
        raise NetworksError(f"a member's MTU is its network's ({MEMBER_MTU}), not {mtu}")
    argv = [sys.executable, "-m", "slirpy", "run", "--network", NET, *extra]
    for p in ports:
        argv += ["-p", f"127.0.0.1:{p}:{p}"]
    return argv


def start_member(tmp: str, argv_tail: list[str], mtu: int = 65520, ports: list[int] = (),
                 extra: list[str] = (), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=None) -> subprocess.Popen:
    ensure_network(tmp)
    return subprocess.Popen([*member_argv(mtu, list(ports), list(extra)), "--", *argv_tail],
                            env=xdg_env(tmp), cwd=REPO, stdin=stdin, stdout=stdout,
                            stderr=stderr if stderr is not None else subprocess.DEVNULL,
                            start_new_session=True)


def stop(*procs: subprocess.Popen | None) -> None:
    for p in procs:
        if p is None or p.poll() is not None:
            continue
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise NetworksError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- member <-> member ----------------------------------------------------------------------------

def sample_member_pair(tmp: str, seconds: int, direction: str,
                       parse: Callable[[str], dict]) -> dict:
    """An iperf3 server member pinned at SERVER_IP, a client member; the client's JSON parsed."""
    with tempfile.TemporaryFile() as err:
        server = start_member(tmp, ["iperf3", "-s", "-1", "-B", SERVER_IP], extra=["--ip", SERVER_IP],
                              stderr=err)
        client = None
        try:
            wait_for(lambda: _member_ip_listens(tmp, 5201) or server.poll() is not None,
                     "the iperf3 server member")
            if server.poll() is not None:
                err.seek(0)
                raise NetworksError(f"server member exited: {err.read().decode()[-300:]}")
            argv = ["iperf3", "-c", SERVER_IP, "-t", str(seconds), "-J"]
            if direction == "down":
                argv.append("-R")
            client = start_member(tmp, argv, stdout=subprocess.PIPE, stderr=err)
            out, _ = client.communicate(timeout=seconds + 60)
            return parse(out.decode(errors="replace"))
        finally:
            stop(client, server)


# Inside `unshare -Urn` (the stand-in holder): a bridge, two member namespaces (children
# `unshare -n sleep`) each with a veth pair into it, MTU 65520, iperf3 from the second member
# to the first; iperf3's JSON on stdout. $1: seconds, $2: "-R" or "".
BRIDGE_SCRIPT = r"""
set -e
for f in /proc/sys/net/bridge/bridge-nf-call-iptables /proc/sys/net/bridge/bridge-nf-call-ip6tables; do
  [ -e $f ] && echo 0 > $f
done
ip link set lo up
ip link add br0 type bridge
ip link set br0 up
unshare -n sleep 600 & m1=$!
unshare -n sleep 600 & m2=$!
trap 'kill $m1 $m2 2>/dev/null' EXIT
i=2
for m in $m1 $m2; do
  until [ "$(readlink /proc/$m/ns/net)" != "$(readlink /proc/self/ns/net)" ]; do sleep 0.01; done
  ip link add p$i mtu 65520 type veth peer name eth0 mtu 65520 netns $m
  ip link set p$i master br0 up
  nsenter -t $m -n sh -c "ip link set lo up && ip addr add 10.9.0.$i/24 dev eth0 && ip link set eth0 up"
  i=$((i+1))
done
nsenter -t $m1 -n iperf3 -s -1 -B 10.9.0.2 >/dev/null 2>&1 &
until nsenter -t $m1 -n ss -Hltn "sport = :5201" | grep -q .; do sleep 0.05; done
nsenter -t $m2 -n iperf3 -c 10.9.0.2 -t "$1" $2 -J
"""


def sample_bridge_pair(seconds: int, direction: str, parse: Callable[[str], dict]) -> dict:
    """member<->member over the kernel bridge alone (the ``bridge`` peer): iperf3's JSON parsed."""
    r = subprocess.run(["unshare", "-Urn", "sh", "-c", BRIDGE_SCRIPT, "sh", str(seconds),
                        "-R" if direction == "down" else ""], capture_output=True, text=True,
                       timeout=seconds + 60)
    if r.returncode:
        raise NetworksError(f"bridge reference: {(r.stderr or r.stdout).strip()[-300:]}")
    return parse(r.stdout)


def _member_ip_listens(tmp: str, port: int) -> bool:
    """Is the server member's iperf3 listening? Asked from inside its namespace through the
    record's supervisor (ns_pid) when the registry shows it, else by trying to connect from a
    throwaway member would cost a start-up: poll the record and `ss` in its netns."""
    for rec in _records(tmp):
        ns_pid = rec.get("ns_pid")
        if not ns_pid or SERVER_IP not in json.dumps(rec.get("networks", {})):
            continue
        r = subprocess.run(["nsenter", "-U", "-n", "--preserve-credentials", "-t", str(ns_pid),
                            "ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
        return r.returncode == 0 and bool(r.stdout.strip())
    return False


def _records(tmp: str) -> list[dict]:
    d = Path(tmp, "xdg_runtime_dir", "slirpy", "sandboxes")
    out = []
    for f in d.glob("*.json") if d.is_dir() else []:
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            pass
    return out


# -- time to the first instruction ---------------------------------------------------------------

def sample_first_instruction(tmp: str, plain: bool) -> float:
    """ms from exec of `slirpy run [--network N] -- sh -c 'echo 1 >FIFO'` to the FIFO's byte."""
    keeper = None if plain else start_member(tmp, ["sleep", "600"])
    path = tempfile.mktemp(prefix="first-", suffix=".fifo", dir=tmp)
    os.mkfifo(path, 0o666)
    rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    proc = None
    try:
        if keeper is not None:
            wait_for(lambda: any(r.get("ns_pid") for r in _records(tmp)) and router_pid(tmp) is not None,
                     "the network to be up")
        argv = ([sys.executable, "-m", "slirpy", "run"] if plain else member_argv(65520, []))
        t0 = time.monotonic()
        proc = subprocess.Popen([*argv, "--", "sh", "-c", f"echo 1 >{shlex.quote(path)}"],
                                env=xdg_env(tmp), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        import select
        ready, _, _ = select.select([rfd], [], [], 60)
        if not ready:
            raise NetworksError("the command never ran")
        return (time.monotonic() - t0) * 1000
    finally:
        os.close(rfd)
        os.unlink(path)
        if proc is not None:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                stop(proc)
        stop(keeper)


# -- memory per idle member ----------------------------------------------------------------------

def _slirpy_pids(tmp: str) -> list[int]:
    """The router, and every member's `slirpy run` process and its descendants that are slirpy's
    (its supervisor while it runs, the PID 1 of its PID namespace, whatever program they run) —
    not the members' own commands."""
    pids = []
    router = router_pid(tmp)
    if router:
        pids.append(router)
    for rec in _records(tmp):
        pid = rec.get("pid")
        if isinstance(pid, int):
            pids += [pid, *_sandbox_descendants(pid)]
    return pids


def _nspid(pid: int) -> list[str]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return line.split()[1:]
    except OSError:
        pass
    return []


def _sandbox_descendants(pid: int) -> list[int]:
    """Descendants of `pid` in its own PID namespace, and PID 1 of a nested one: the command
    (pid >= 2 inside) and its children are left out."""
    out, todo = [], [pid]
    depth = len(_nspid(pid))
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for k in map(int, kids):
            ns = _nspid(k)
            if not ns or (len(ns) > depth and ns[-1] != "1"):
                continue
            out.append(k)
            todo.append(k)
    return out


def _mem_kib(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def sample_idle_member(tmp: str) -> dict:
    members = []
    try:
        members.append(start_member(tmp, ["sleep", "600"]))
        wait_for(lambda: len([r for r in _records(tmp) if r.get("ns_pid")]) == 1, "the first member")
        time.sleep(1.0)
        rss1, pss1 = _mem_kib(_slirpy_pids(tmp))
        for _ in range(IDLE_MEMBERS - 1):
            members.append(start_member(tmp, ["sleep", "600"]))
        wait_for(lambda: len([r for r in _records(tmp) if r.get("ns_pid")]) == IDLE_MEMBERS,
                 f"{IDLE_MEMBERS} members", timeout=120)
        time.sleep(1.0)
        rss_n, pss_n = _mem_kib(_slirpy_pids(tmp))
        n = IDLE_MEMBERS - 1
        return {"rss_per_member_mib": (rss_n - rss1) / n / 1024,
                "pss_per_member_mib": (pss_n - pss1) / n / 1024}
    finally:
        stop(*members)
