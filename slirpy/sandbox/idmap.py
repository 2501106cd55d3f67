"""The sandbox's uid/gid maps, written once S has unshared its user namespace.

Either a single id (``0 -> our uid``, written to {setgroups,uid_map,gid_map} in /proc) or, with
``--map-subuids``, our id plus the subordinate ranges of /etc/subuid and /etc/subgid through the
setuid helpers newuidmap/newgidmap.  The plan is made (and its prerequisites checked) before the
fork, so that a missing helper or range is reported without starting anything.

A single id is written by S itself, right after its unshare (`maps_itself`; the kernel lets the
namespace's creator map its own ids): no round trip with P, whose wake-up of S on this 2-vCPU VM
took 0-5 ms, median 1.3 (perf/NOTES.md, session 14).  The subordinate ranges need the setuid helpers
run from outside the namespace: P runs them while S waits (`apply`).
"""

from __future__ import annotations

import os

from slirpy.sandbox.handoff import SETUP_TIMEOUT, one_line
from slirpy.sandbox.modes import writes_id_maps
from slirpy.sandbox.options import SandboxError, SandboxOptions


class IdMaps:
    def __init__(self, uid: int, gid: int, sub: tuple[tuple[int, int], tuple[int, int]] | None) -> None:
        self.uid, self.gid, self.sub = uid, gid, sub

    def apply(self, pid: int) -> None:
        """Write the maps of `pid`'s user namespace (P, for S)."""
        if self.sub is None:
            self._write_single(f"/proc/{pid}")
            return
        import subprocess           # here: only --map-subuids needs it (start-up time)

        (ustart, ucount), (gstart, gcount) = self.sub
        for tool, own, start, count in (("newuidmap", self.uid, ustart, ucount),
                                        ("newgidmap", self.gid, gstart, gcount)):
            cmd = [tool, str(pid), "0", str(own), "1", "1", str(start), str(count)]
            try:
                res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, timeout=SETUP_TIMEOUT)
            except OSError as e:
                raise SandboxError(f"cannot run {tool}: {e.strerror} (fix: sudo apt-get install uidmap)") from None
            if res.returncode != 0:
                why = one_line(res.stderr) or f"exit status {res.returncode}"
                raise SandboxError(f"{tool} failed: {why} (fix: check /etc/sub{tool[3]}id, or drop --map-subuids)")


    def apply_own(self) -> None:
        """S, right after unsharing its user namespace: write its own single-id maps."""
        self._write_single("/proc/self")

    def _write_single(self, proc: str) -> None:
        try:
            _write(f"{proc}/setgroups", "deny")
            _write(f"{proc}/uid_map", f"0 {self.uid} 1\n")
            _write(f"{proc}/gid_map", f"0 {self.gid} 1\n")
        except OSError as e:
            raise SandboxError(f"cannot write the sandbox's uid/gid map ({e.filename}): {e.strerror}") from None


def maps_itself(opts: SandboxOptions) -> bool:
    """Whether S writes its own maps (a single id) right after its unshare."""
    return writes_id_maps(opts.net_mode) and not opts.map_subuids


def parent_maps(opts: SandboxOptions) -> bool:
    """Whether P writes S's maps (the subordinate ranges) while S waits: the one setup that has
    S say ``unshared`` and wait for ``mapped`` (the modes that join a user namespace map nothing)."""
    return writes_id_maps(opts.net_mode) and opts.map_subuids


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def plan_id_maps(map_subuids: bool) -> IdMaps:
    uid, gid = os.geteuid(), os.getegid()
    if not map_subuids:
        return IdMaps(uid, gid, None)
    import shutil

    from slirpy import doctor
    for tool in ("newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            raise SandboxError(f"--map-subuids needs {tool}, which is not installed (fix: sudo apt-get install uidmap)")
    user = doctor.user_name(uid)
    ranges = []
    for kind, path in (("uid", "/etc/subuid"), ("gid", "/etc/subgid")):
        rng = doctor.subid_range(path, user, uid)
        if rng is None:
            raise SandboxError(f"--map-subuids: no entry for {user} in {path} "
                               f"(fix: sudo usermod --add-sub{kind}s 100000-165535 {user})")
        ranges.append(rng)
    return IdMaps(uid, gid, (ranges[0], ranges[1]))
