"""The sandbox's own /etc/resolv.conf (``slirpy run`` points it at the gateway's DNS forwarder)
and /etc/hosts (its own name, ``--add-host``).

Done by S in its private mount namespace, before anything runs there; nothing is written on the
host.  Its own module because the how (a copied-up /etc rather than a bind mount over the file)
is subtle enough to need the reasons next to the code; see `bind_etc_files`.
"""

from __future__ import annotations

import os

from slirpy.sandbox.libc import MS_BIND, MS_NODEV, MS_NOSUID, MS_REC, mount, umount_detached

RESOLV_CONF = "/etc/resolv.conf"


def bind_resolv_conf(text: str, target: str = RESOLV_CONF) -> str | None:  # pragma: no cover
    """S: give the sandbox its own `target` with `text`; a problem, or None (see bind_etc_files)."""
    return bind_etc_files({os.path.basename(target): text}, os.path.dirname(target))


def bind_etc_files(files: dict[str, str], etc: str = "/etc") -> str | None:  # pragma: no cover
    """S: give the sandbox its own `etc`/NAME with TEXT for each NAME: TEXT of `files`
    (resolv.conf, hosts); a problem, or None. Nothing is written on the host.

    The sandbox gets its own /etc (as RootlessKit's copy-up does): a small tmpfs in which
    every entry of the host's /etc is a relative symlink into `.host/`, a bind mount of the
    host's /etc, except the files given, which are real files. So later host changes to its
    other /etc files show through, and a host that *replaces* its resolv.conf (NetworkManager
    and systemd-resolved write a new file and rename it over the old one) cannot take the
    sandbox's away: a plain bind mount over the file would be detached by the kernel then
    (Linux >= 3.18), leaving the sandbox with the host's nameserver, often 127.0.0.53, which
    it cannot reach. If the copy-up is refused, each file alone is bind-mounted.
    """
    what = " and ".join(os.path.join(etc, n) for n in files)
    if not os.path.isdir(etc):
        return f"{etc} does not exist here; inside, {_CONSEQUENCE}"
    last = "no scratch directory"
    for scratch in ("/tmp", "/mnt", "/run"):
        if not os.path.isdir(scratch):
            continue
        try:
            mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV)
        except OSError as e:
            last = e.strerror or str(e)
            continue
        try:
            return _cover_from(scratch, files, etc)
        except OSError as e:
            return f"cannot give the sandbox its own {what} ({e.strerror}); {_CONSEQUENCE}"
        finally:
            umount_detached(scratch)
    return f"cannot give the sandbox its own {what} ({last}); {_CONSEQUENCE}"


_CONSEQUENCE = "DNS names may not resolve"


def _cover_from(scratch: str, files: dict[str, str], etc: str) -> str | None:  # pragma: no cover
    """Write `files` into a new etc/ in the tmpfs at `scratch`, then mount that etc/ over the
    host's (the copy-up), or if that is refused, each file alone over the host's.  A problem, or None.
    """
    new_etc = os.path.join(scratch, "etc")
    os.mkdir(new_etc, 0o755)
    for name, text in files.items():
        fd = os.open(os.path.join(new_etc, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    try:
        _copy_up(etc, new_etc, set(files))
        return None
    except OSError:
        pass                    # copy-up refused: cover the files alone
    missing = [os.path.join(etc, n) for n in files if not os.path.exists(os.path.join(etc, n))]
    if missing:
        return f"{' and '.join(missing)} does not exist here; inside, {_CONSEQUENCE}"
    for name in files:
        mount(os.path.join(new_etc, name), os.path.join(etc, name), None, MS_BIND)
    return None


def _copy_up(etc: str, new_etc: str, names: set[str]) -> None:  # pragma: no cover
    """Fill `new_etc` (which holds `names` already) with links to every other entry of `etc`,
    bind-mount `etc` on its `.host`, then `new_etc` over `etc`."""
    host = os.path.join(new_etc, ".host")
    os.mkdir(host, 0o755)
    for entry in os.listdir(etc):
        if entry in names or entry == ".host":
            continue
        orig = os.path.join(etc, entry)
        # a symlink is copied as it is (a relative one such as mtab ->
        # ../proc/self/mounts must stay relative to /etc); anything else is reached
        # through .host, so that it stays the host's live file
        link = os.readlink(orig) if os.path.islink(orig) else os.path.join(".host", entry)
        os.symlink(link, os.path.join(new_etc, entry))
    mount(etc, host, None, MS_BIND | MS_REC)
    mount(new_etc, etc, None, MS_BIND | MS_REC)
