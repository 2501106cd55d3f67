"""The sandbox's /etc/resolv.conf survives the host replacing its own.

NetworkManager and systemd-resolved rewrite resolv.conf by writing a new file and renaming
it over the old one, e.g. when a laptop changes networks. A bind mount over the file would
be detached by the kernel at that moment and the sandbox would see the host's file (often
nameserver 127.0.0.53, which it cannot reach). slirpy gives the sandbox its own /etc
instead: its own resolv.conf, and every other entry a link to the host's live file.

"The host's /etc" here is a scratch directory bind-mounted over /etc in a mount namespace of
the test's own (unshare -m inside the outer test namespace), so nothing real is touched.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time

from .util import REPO, slirpy_argv

SCRIPT = r"""
cat /etc/resolv.conf; echo ---
: > "$1"
i=0; while [ ! -e /etc/.host/renamed-marker ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
sleep 0.2
cat /etc/resolv.conf; echo ---
cat /etc/motd-test; echo ---
readlink /etc/mtab; echo ---
ls /etc/.host/resolv.conf >/dev/null && echo host-dir-visible
"""


def test_host_renaming_a_new_resolv_conf_over_its_own_does_not_reach_the_sandbox(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "resolv.conf").write_text("nameserver 127.0.0.53\nsearch corp.test\n")
    (etc / "motd-test").write_text("before\n")
    os.symlink("../proc/self/mounts", etc / "mtab")
    first_view = tmp_path / "first-view-printed"
    # --no-sandbox: this fake /etc has no ld.so.cache, so libseccomp (found through it) could not
    # be loaded and the hardened runtime would refuse to start; the test is about the sandbox's
    # own /etc, which hardening does not change (tests/netns/test_harden_e2e.py covers that).
    inner = shlex.join(slirpy_argv("--no-sandbox", "--resolv-conf", str(etc / "resolv.conf"))
                       + ["sh", "-c", SCRIPT, "sh", str(first_view)])
    proc = subprocess.Popen(
        ["unshare", "-m", "sh", "-c", f"mount --bind {shlex.quote(str(etc))} /etc && exec {inner}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 60             # until the sandbox has printed its first view
        while not first_view.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=30)
            time.sleep(0.05)
        new = etc / "resolv.conf.new"
        new.write_text("nameserver 127.0.0.1\nsearch other.test\n")
        os.rename(new, etc / "resolv.conf")          # the host replaces its file, as NM does
        (etc / "motd-test").write_text("after\n")    # an in-place change of another file
        (etc / "renamed-marker").write_text("")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    assert proc.returncode == 0, err
    first, second, motd, mtab, rest = out.split("---\n")
    for view in (first, second):
        assert "nameserver 10.0.2.3" in view, out
        assert "127.0.0" not in view, out
    assert "search corp.test" in first           # the host's search domains at start
    assert motd == "after\n"                     # other files are the host's live ones
    assert mtab.strip() == "../proc/self/mounts" # relative links keep their meaning
    assert "host-dir-visible" in rest
