"""The holder's packet filter: `table inet slirpy`, generated from the network definitions and
the members, loaded with the real `nft -f -` inside the holder's namespaces.

Why nft and not routes alone: members of two networks live in one network namespace (the
holder's), which routes between its bridges; isolation, `--internal`, `--egress-deny`,
`--ingress-allow`, anti-spoofing and the per-member host-loopback gate are forwarding decisions
the kernel makes for us here, at kernel speed, and `nft -j list` shows them and their counters.

The whole table is replaced in one transaction each time (`table`, `delete table`, then the new
table: nft applies a file atomically), so a half-applied ruleset never exists. Generating the
text is pure (`ruleset`); `apply` and `read_counters` run nft and must be called from a process
already inside the holder's user and net namespaces (holderns.in_holder).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from slirpy.networks.defs import NetworkDef

TABLE = "slirpy"
UPLINK = "tap0"
HOST_LOOPBACK4, HOST_LOOPBACK6 = "10.0.2.2", "fd00::2"
DNS4, DNS6 = "10.0.2.3", "fd00::3"


def nft_binary() -> str:
    """`nft` on PATH, else where Debian puts it (/usr/sbin, often not on a user's PATH)."""
    import shutil
    return shutil.which("nft") or next((p for p in ("/usr/sbin/nft", "/sbin/nft") if os.path.exists(p)), "nft")


@dataclass(frozen=True)
class MemberAddr:
    """One member address on one network, as the filter needs it."""
    network: str
    ip: str
    ip6: str | None
    host_loopback: bool


def _reject(comment: str, tcp_reset: bool = True) -> list[str]:
    """TCP gets a reset, everything else ICMP(v6) administratively prohibited; counted."""
    out = []
    if tcp_reset:
        out.append(f'meta l4proto tcp counter reject with tcp reset comment "{comment}"')
    out.append(f'counter reject with icmpx admin-prohibited comment "{comment}"')
    return out


def _set(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _dns_rules(d: NetworkDef) -> list[str]:
    br = f'iifname "{d.bridge}"'
    rules = [f"{br} ip daddr {d.gateway} {p} dport 53 dnat ip to {DNS4}" for p in ("udp", "tcp")]
    if d.gateway6:
        rules += [f"{br} ip6 daddr {d.gateway6} {p} dport 53 dnat ip6 to {DNS6}" for p in ("udp", "tcp")]
    return rules


def _network_rules(d: NetworkDef, others: list[NetworkDef]) -> list[str]:
    """The forward-chain rules of one network (after established/DNS accepts)."""
    br = d.bridge
    rules = [f'iifname "{br}" ip saddr != {d.subnet} counter drop comment "{d.name}: spoofed source"']
    if d.subnet6:
        rules.append(f'iifname "{br}" ip6 saddr != {d.subnet6} counter drop comment "{d.name}: spoofed source"')
    if others:
        names = _set([f'"{o.bridge}"' for o in others])
        rules += [f'iifname "{br}" oifname {names} ' + r for r in _reject(f"{d.name}: isolation")]
    if d.internal:
        rules += [f'iifname "{br}" oifname != "{br}" ' + r for r in _reject(f"{d.name}: internal")]
        rules += [f'oifname "{br}" iifname != "{br}" ' + r for r in _reject(f"{d.name}: internal")]
    v4 = [c for c in d.egress_deny if ":" not in c]
    v6 = [c for c in d.egress_deny if ":" in c]
    for fam, cidrs in (("ip", v4), ("ip6", v6)):
        if cidrs:
            rules += [f'iifname "{br}" {fam} daddr {_set(cidrs)} ' + r
                      for r in _reject(f"{d.name}: egress-deny")]
    if d.ingress_allow:
        new = f'iifname "{UPLINK}" oifname "{br}" ct state new'
        for fam, allowed in (("ip", [c for c in d.ingress_allow if ":" not in c]),
                             ("ip6", [c for c in d.ingress_allow if ":" in c])):
            match = f"{fam} saddr != {_set(allowed)}" if allowed else f"meta nfproto {'ipv4' if fam == 'ip' else 'ipv6'}"
            rules.append(f'{new} {match} meta l4proto tcp counter reject with tcp reset '
                         f'comment "{d.name}: ingress-allow"')
            rules.append(f'{new} {match} counter drop comment "{d.name}: ingress-allow"')
    return rules


def _loopback_rules(members: list[MemberAddr]) -> list[str]:
    """Host loopback (the gateway 10.0.2.2 / fd00::2) only for members that asked for it."""
    rules = []
    for fam, gw, allowed in (("ip", HOST_LOOPBACK4, sorted({m.ip for m in members if m.host_loopback})),
                             ("ip6", HOST_LOOPBACK6, sorted({m.ip6 for m in members
                                                             if m.host_loopback and m.ip6}))):
        match = f"{fam} daddr {gw}" + (f" {fam} saddr != {_set(allowed)}" if allowed else "")
        rules += [f'oifname "{UPLINK}" {match} ' + r for r in _reject("host loopback not allowed")]
    return rules


def ruleset(active: list[NetworkDef], members: list[MemberAddr]) -> str:
    """The nft script that replaces `table inet slirpy` with the rules for `active` networks."""
    dnat = [r for d in active for r in _dns_rules(d)]
    forward = ["ct state established,related accept", "ct status dnat accept"]
    forward += _loopback_rules(members)
    for d in active:
        forward += _network_rules(d, [o for o in active if o.name != d.name])
    inp = []
    for d in active:
        own = [d.gateway] + ([d.gateway6] if d.gateway6 else [])
        inp.append(f'iifname "{d.bridge}" ip daddr != {d.gateway} meta nfproto ipv4 '
                   f'counter reject with icmpx admin-prohibited comment "{d.name}: holder"')
        if d.gateway6:
            inp.append(f'iifname "{d.bridge}" ip6 daddr != {_set(own[1:])} ip6 daddr != fe80::/10 '
                       f'ip6 daddr != ff00::/8 counter reject with icmpx admin-prohibited '
                       f'comment "{d.name}: holder"')

    def chain(name: str, head: str, rules: list[str]) -> str:
        body = "".join(f"\t\t{r}\n" for r in rules)
        return f"\tchain {name} {{\n\t\t{head}\n{body}\t}}\n"

    switched = [r for d in active for r in _bridge_rules(d)]
    return (f"table inet {TABLE}\ndelete table inet {TABLE}\n"
            f"table bridge {TABLE}\ndelete table bridge {TABLE}\ntable inet {TABLE} {{\n"
            + chain("dns", "type nat hook prerouting priority dstnat; policy accept;", dnat)
            + chain("forward", "type filter hook forward priority filter; policy accept;", forward)
            + chain("input", "type filter hook input priority filter; policy accept;", inp)
            + f"}}\ntable bridge {TABLE} {{\n"
            + chain("forward", "type filter hook forward priority filter; policy accept;", switched)
            + "}\n")


def _bridge_rules(d: NetworkDef) -> list[str]:
    """The frames a network's bridge switches from one member to another never reach the inet
    table (holderns.bridged_traffic_skips_ip_hooks: no conntrack on member<->member traffic);
    anti-spoofing, the one inet rule that applied to them, is kept here, stateless. The
    bridge's ports are the members' veth peers `s<index>v<host>` (member.py)."""
    port = f'iifname "s{d.index}v*"'
    rules = [f'{port} ip saddr != {d.subnet} counter drop comment "{d.name}: spoofed source"']
    if d.subnet6:
        rules.append(f'{port} ip6 saddr != {d.subnet6} counter drop comment "{d.name}: spoofed source"')
    return rules


class NftError(Exception):
    """nft refused the ruleset; str() is nft's first error line."""


def apply(script: str) -> None:
    """Load `script` with `nft -f -` (call inside the holder's namespaces)."""
    proc = subprocess.run([nft_binary(), "-f", "-"], input=script.encode(), capture_output=True, timeout=30)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise NftError(f"nft -f - failed: {lines[0] if lines else 'exit status %d' % proc.returncode}")


def read_rules() -> list[dict]:
    """Every rule of our tables (inet and bridge) with its counter: [{"family", "chain",
    "handle", "comment", "packets", "bytes"}] (call inside the holder's namespaces); [] when
    there is none."""
    proc = subprocess.run([nft_binary(), "-j", "list", "ruleset"], capture_output=True, timeout=30)
    if proc.returncode != 0:
        return []
    return parse_rules(json.loads(proc.stdout or b"{}"))


def parse_rules(doc: dict) -> list[dict]:
    """The rules of our tables in `nft -j list` output, each with its counter (0 when it has
    none)."""
    out = []
    for item in doc.get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict) or rule.get("table", TABLE) != TABLE:
            continue
        packets = bytes_ = 0
        for expr in rule.get("expr", []):
            if isinstance(expr, dict) and isinstance(expr.get("counter"), dict):
                packets, bytes_ = expr["counter"].get("packets", 0), expr["counter"].get("bytes", 0)
        out.append({"family": rule.get("family"), "chain": rule.get("chain"), "handle": rule.get("handle"),
                    "comment": rule.get("comment"), "packets": packets, "bytes": bytes_})
    return out
