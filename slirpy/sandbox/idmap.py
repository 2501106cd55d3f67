"""The sandbox's uid/gid maps, written by P once S has unshared its user namespace.

Either a single id (``0 -> our uid``, written to /proc/PID/{setgroups,uid_map,gid_map}) or, with
``--map-subuids``, our id plus the subordinate ranges of /etc/subuid and /etc/subgid through the
setuid helpers newuidmap/newgidmap.  The plan is made (and its prerequisites checked) before the
fork, so that a missing helper or range is reported without starting anything.
"""

from __future__ import annotations

import os

from slirpy.sandbox.handoff import SETUP_TIMEOUT, one_line
from slirpy.sandbox.options import SandboxError


class IdMaps:
    def __init__(self, uid: int, gid: int, sub: tuple[tuple[int, int], tuple[int, int]] | None) -> None:
        self.uid, self.gid, self.sub = uid, gid, sub

    def apply(self, pid: int) -> None:
        if self.sub is None:
            try:
                _write(f"/proc/{pid}/setgroups", "deny")
                _write(f"/proc/{pid}/uid_map", f"0 {self.uid} 1\n")
                _write(f"/proc/{pid}/gid_map", f"0 {self.gid} 1\n")
            except OSError as e:
                raise SandboxError(f"cannot write the sandbox's uid/gid map ({e.filename}): {e.strerror}") from None
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
