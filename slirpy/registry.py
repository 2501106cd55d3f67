"""Every running sandbox by name: one small JSON file per sandbox under the user's runtime
directory, and the one lock that serialises every change of sandbox and network state.

There is no daemon to ask "what is running": `slirpy run` writes its record when it starts and
removes it when it ends, and whoever reads the records (`slirpy ps`, a name lookup, the networks
code) checks that each one's process still lives and deletes those that do not (a `slirpy run`
killed with SIGKILL cannot remove its own).  A pid alone is not proof of life, since pids are
reused: a record also keeps the process's start time (field 22 of /proc/PID/stat), and a process
with the same pid but another start time is someone else.

Writes are atomic (a temporary file renamed over the record), so a reader never sees half a
record; registering checks the name and writes under `state_lock`, so two runs asking for one
name cannot both get it.  Kept free of heavy imports: a plain `slirpy run` registers itself on
its way to start-up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing before a run's command starts
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

NAME_MAX = 63                       # a DNS label and a hostname fit it
_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.-")
MODES = ("private", "network", "none", "host")     # and "sandbox:NAME"


class RegistryError(Exception):
    """A state directory or record cannot be used; str() is one line a user can act on."""


class NameTaken(RegistryError):
    """A running sandbox already has that name."""


class BadName(RegistryError, ValueError):
    """Not a usable sandbox name."""


class SandboxRecord:
    """One running sandbox, as `slirpy ps` shows it (the file `<runtime_dir>/sandboxes/NAME.json`).

    A plain class, not a dataclass: a plain `slirpy run` registers itself on its way to its
    command's start, where a dataclass's generated methods cost their compilation at import.
    Compared by value, as a dataclass is (and so not hashable)."""
    __slots__ = ("name", "pid", "start_time", "ns_pid", "created", "mode", "api_socket", "hostname",
                 "networks", "ports", "pidns", "auto_publish")

    def __init__(self, name: str, pid: int, start_time: int = 0, ns_pid: int | None = None,
                 created: float | None = None, mode: str = "private", api_socket: str | None = None,
                 hostname: str | None = None, networks: dict[str, dict] | None = None,
                 ports: list | None = None, pidns: str = "", auto_publish: dict | None = None) -> None:
        self.name = name
        self.pid = pid                           # the `slirpy run` process
        self.start_time = start_time             # field 22 of /proc/PID/stat; 0: filled by register()
        self.ns_pid = ns_pid                     # a process inside its namespaces (the supervisor)
        self.created: float = time.time() if created is None else created
        self.mode = mode                         # private | network | none | host | sandbox:NAME
        self.api_socket = api_socket             # the API socket that serves its ports
        self.hostname = hostname
        # name -> {ip, ip6, aliases, iface, ports}
        self.networks: dict[str, dict] = networks if networks is not None else {}
        self.ports: list = ports if ports is not None else []     # published ports (text or API entries)
        self.pidns = pidns                       # the PID namespace `pid` is a number in; "": filled by register()
        self.auto_publish = auto_publish         # a member's `-p auto`: {"protos": [...], "host_addr"}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SandboxRecord):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"SandboxRecord({', '.join(f'{k}={v!r}' for k, v in self.to_json().items())})"

    def to_json(self) -> dict[str, Any]:
        """Every field by name (a new dict; its values are the record's own)."""
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def from_json(cls, data: object) -> SandboxRecord:
        """Raises ValueError if `data` is not a record (unknown keys are ignored)."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        known = set(cls.__slots__)
        try:
            rec = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:              # name or pid missing
            raise ValueError(str(e)) from None
        if not isinstance(rec.name, str) or not isinstance(rec.pid, int) or not isinstance(rec.start_time, int):
            raise ValueError("bad name, pid or start_time")
        return rec


# ------------------------------------------------------------------ directories


def _private_dir(path: str) -> str:
    """Create `path` 0700 if missing; refuse it if it is not a directory of ours, mode 0700."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise RegistryError(f"cannot create {path}: {e.strerror}") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise RegistryError(f"{path} is not a directory (remove it, slirpy keeps its state there)")
    if st.st_uid != os.geteuid():
        raise RegistryError(f"{path} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}): "
                            "refusing to keep state there")
    if stat.S_IMODE(st.st_mode) != 0o700:
        raise RegistryError(f"{path} has mode {stat.S_IMODE(st.st_mode):o}, not 700: refusing to keep "
                            f"state there (fix: chmod 700 {path})")
    return path


def runtime_dir() -> str:
    """`$XDG_RUNTIME_DIR/slirpy` if that variable names a usable directory, else slirpy-UID in
    the temporary directory ($TMPDIR, else /tmp)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg) and os.access(xdg, os.W_OK | os.X_OK):
        return _private_dir(os.path.join(xdg, "slirpy"))
    import tempfile
    return _private_dir(os.path.join(tempfile.gettempdir(), f"slirpy-{os.geteuid()}"))


def data_dir() -> str:
    """`$XDG_DATA_HOME/slirpy`, else ~/.local/share/slirpy (parents created as needed)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".local", "share")
    try:
        os.makedirs(base, 0o755, exist_ok=True)
    except OSError as e:
        raise RegistryError(f"cannot create {base}: {e.strerror}") from None
    return _private_dir(os.path.join(base, "slirpy"))


def sandboxes_dir() -> str:
    return _private_dir(os.path.join(runtime_dir(), "sandboxes"))


def record_path(name: str) -> str:
    return os.path.join(sandboxes_dir(), name + ".json")


def default_api_socket(name: str) -> str:
    """Where a plain run without --api-socket serves its API."""
    return os.path.join(sandboxes_dir(), name + ".sock")


# ------------------------------------------------------------------ the lock


class _StateLock:
    """flock(2) on `<runtime_dir>/lock`, reentrant within one process.

    A flock belongs to an open file description: a process that holds it and opens the file
    again to lock it would wait for itself.  So the depth is counted here (per process: a child
    forked while the lock is held does not think it holds it)."""

    def __init__(self) -> None:
        self.fd = -1
        self.depth = 0
        self.owner = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.depth and self.owner == os.getpid():
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
            return
        fd = os.open(state_lock_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.fd, self.depth, self.owner = fd, 1, os.getpid()
            yield
        finally:
            self.fd, self.depth, self.owner = -1, 0, 0
            os.close(fd)                 # releases the flock


def state_lock_path() -> str:
    """The file `state_lock` flocks (the native waiter takes it too: sandbox/waiter.c)."""
    return os.path.join(runtime_dir(), "lock")


_LOCK = _StateLock()     # the process's hold on the flock: process-wide by nature, like the flock


def state_lock() -> contextlib.AbstractContextManager[None]:
    """Exclusive lock over all sandbox and network state of this user, across processes."""
    return _LOCK.hold()


# ------------------------------------------------------------------ records


def check_name(name: str) -> str:
    """`name` if usable (letters, digits, then also _ . -; at most 63), else BadName."""
    if (not name or len(name) > NAME_MAX or name[0] not in _NAME_FIRST
            or any(c not in _NAME_REST for c in name)):
        raise BadName(f"invalid sandbox name {name!r}: use 1-{NAME_MAX} letters, digits, '_', '.' "
                      "or '-', starting with a letter or digit")
    return name


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), None if no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    try:
        # comm (field 2) may hold spaces and parentheses: count from the last ')'
        return int(raw[raw.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def own_pidns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def is_alive(rec: SandboxRecord) -> bool:
    """Whether the record's process still runs.

    A record written in another PID namespace (a `slirpy run` inside a sandbox, which sees the
    same runtime directory) has a pid that means nothing in ours: it is alive while its
    `NAME.lock` is locked (its process holds the flock from `register` to its end, and the
    kernel drops it when the process dies, SIGKILL included); without a lock file we cannot
    tell, and it counts as alive."""
    if not rec.pidns or rec.pidns == own_pidns():
        return rec.pid > 0 and proc_start_time(rec.pid) == rec.start_time
    try:
        fd = os.open(_lock_path(rec.name), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)            # (releases the probe's lock, if it got it)


def _read(path: str) -> SandboxRecord | None:
    """The record in `path`; None if missing; ValueError if it is not a record."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(str(e)) from None
    return SandboxRecord.from_json(json.loads(raw))


def _write(rec: SandboxRecord) -> None:
    path = record_path(rec.name)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(rec.to_json()).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _lock_path(name: str) -> str:
    return os.path.join(sandboxes_dir(), name + ".lock")


_HELD: dict[str, int] = {}     # name -> fd of the NAME.lock this process holds (see is_alive)


def _hold(name: str) -> None:
    """Lock NAME.lock for as long as this process lives (or until unregister)."""
    fd = os.open(_lock_path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    old = _HELD.pop(name, None)
    if old is not None:
        os.close(old)
    _HELD[name] = fd


def keep_across_exec(name: str) -> None:
    """Let the NAME.lock this process holds survive its execve (the light run's waiter)."""
    fd = _HELD.get(name)
    if fd is not None:
        os.set_inheritable(fd, True)


def _drop(name: str) -> None:
    """Delete a record and the files that belong to it (its lock, its default API socket)."""
    held = _HELD.pop(name, None)
    if held is not None:
        os.close(held)
    for path in (record_path(name), _lock_path(name), default_api_socket(name)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def register(rec: SandboxRecord) -> SandboxRecord:
    """Write `rec` (filling start_time from rec.pid); NameTaken if a live sandbox has the name."""
    check_name(rec.name)
    rec.pidns = rec.pidns or own_pidns()
    if not rec.start_time:
        start = proc_start_time(rec.pid)
        if start is None:
            raise RegistryError(f"cannot register {rec.name}: no process {rec.pid}")
        rec.start_time = start
    with state_lock():
        try:
            old = _read(record_path(rec.name))
        except ValueError:
            old = None
        if old is not None and is_alive(old):
            raise NameTaken(f"the name {rec.name!r} is already used by a running sandbox "
                            f"(pid {old.pid}); choose another --name")
        if old is not None:
            _drop(rec.name)
        if rec.pid == os.getpid():
            _hold(rec.name)
        _write(rec)
    return rec


def update(name: str, pid: int, **fields: Any) -> bool:
    """Change fields of `name`'s record if it is still `pid`'s; False if it is not (or is gone)."""
    known = set(SandboxRecord.__slots__) - {"name", "pid", "start_time"}
    bad = set(fields) - known
    if bad:
        raise TypeError(f"not updatable record fields: {sorted(bad)}")
    with state_lock():
        try:
            rec = _read(record_path(name))
        except ValueError:
            return False
        if rec is None or rec.pid != pid:
            return False
        for key, value in fields.items():
            setattr(rec, key, value)
        _write(rec)
    return True


class OwnRecord:
    """This process's own record, removable later without the runtime directory's path or its
    lock: a hardened runtime (harden.py) no longer sees `runtime_dir()` once it serves. Made
    before hardening (it opens the sandboxes directory); `remove()` unlinks the record, its
    NAME.lock and its default API socket relative to that directory. No state lock is needed:
    while this process holds NAME.lock the name is live and nobody else can take it, and it
    lets go of the lock only after the files are gone."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._dirfd: int | None = os.open(sandboxes_dir(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def remove(self) -> None:
        if self._dirfd is None:
            return
        dirfd, self._dirfd = self._dirfd, None
        try:
            for suffix in (".json", ".sock", ".lock"):
                try:
                    os.unlink(self.name + suffix, dir_fd=dirfd)
                except FileNotFoundError:
                    pass
        finally:
            os.close(dirfd)
            held = _HELD.pop(self.name, None)
            if held is not None:
                os.close(held)


def unregister(name: str, pid: int) -> bool:
    """Remove `name`'s record if it is `pid`'s (never another run's that took the name since)."""
    with state_lock():
        try:
            rec = _read(record_path(name))
        except ValueError:
            rec = None
        if rec is None or rec.pid != pid:
            return False
        _drop(name)
    return True


def live() -> list[SandboxRecord]:
    """Every live record, oldest first; the records of dead runs (or unreadable ones) are deleted."""
    out = []
    with state_lock():
        directory = sandboxes_dir()
        for entry in os.listdir(directory):
            if not entry.endswith(".json"):
                continue
            name = entry[:-5]
            try:
                rec = _read(os.path.join(directory, entry))
            except ValueError:
                rec = None
            if rec is not None and rec.name == name and is_alive(rec):
                out.append(rec)
            elif rec is None or rec.name == name:
                _drop(name)
    return sorted(out, key=lambda r: (r.created, r.name))


def lookup(name: str) -> SandboxRecord | None:
    """The live record called `name`, or None (a dead one is deleted)."""
    try:
        path = record_path(name)
        rec = _read(path)
    except ValueError:
        rec = None
    if rec is not None and is_alive(rec):
        return rec
    with state_lock():
        try:
            again = _read(path)
        except ValueError:
            again = None
        if again is None or not is_alive(again):
            if os.path.exists(path):
                _drop(name)
            return None
        return again


_ADJECTIVES = ("brave", "calm", "clever", "eager", "fancy", "gentle", "happy", "jolly", "keen",
               "lively", "lucid", "merry", "nimble", "proud", "quiet", "quick", "shy", "silly",
               "sunny", "swift", "tidy", "vivid", "wise", "witty", "zealous")
_NOUNS = ("badger", "beaver", "crane", "dolphin", "falcon", "ferret", "gecko", "heron", "ibis",
          "koala", "lemur", "lynx", "marten", "newt", "otter", "panda", "puffin", "quokka",
          "raven", "seal", "stoat", "tapir", "walrus", "wombat", "yak")


def auto_name() -> str:
    """A free `adjective_noun` name (with a number after it once those are scarce)."""
    for attempt in range(64):
        rnd = int.from_bytes(os.urandom(4), "big")
        name = f"{_ADJECTIVES[rnd % len(_ADJECTIVES)]}_{_NOUNS[(rnd >> 8) % len(_NOUNS)]}"
        if attempt >= 16:
            name += str((rnd >> 16) % 10000)
        if lookup(name) is None:
            return name
    raise RegistryError("no free sandbox name found; pass --name NAME")


def claim(name: str | None, pid: int, **fields: Any) -> SandboxRecord:
    """Register `pid` as `name`, or when None under a fresh auto_name() (another one if a
    concurrent run took it first).  NameTaken, BadName or RegistryError otherwise."""
    if name is not None:
        return register(SandboxRecord(name=name, pid=pid, **fields))
    for _ in range(8):
        try:
            return register(SandboxRecord(name=auto_name(), pid=pid, **fields))
        except NameTaken:
            continue
    raise RegistryError("no free sandbox name found; pass --name NAME")
