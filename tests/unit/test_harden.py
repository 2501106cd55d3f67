"""harden.py and seccompfilter.py without namespaces: which directories a runtime keeps, the
allow-list's shape, and the filter itself in a forked child (seccomp needs no privilege once
no_new_privs is set): allowed calls work, a forbidden one ends the child with the one line."""

from __future__ import annotations

import os

import pytest

from slirpy import seccompfilter
from slirpy.harden import KEPT_DIRS, HardenError, HardenOptions, runtime_options, scratch_dir


def test_runtime_keeps_the_api_socket_and_stats_directories_outside_etc_and_run(tmp_path):
    opts = runtime_options(HardenOptions(), api_socket=str(tmp_path / "a.sock"),
                           stats_file=str(tmp_path / "s.json"), resolv_conf="/etc/resolv.conf",
                           autoports_pid=42)
    assert opts.keep_dirs == (str(tmp_path),)                      # once, though named twice
    assert opts.proc_dirs == ("/proc/self/fd", "/proc/42/net")
    assert opts.sandbox and opts.seccomp and opts.no_new_privs


def test_paths_under_run_or_etc_add_nothing_and_a_resolv_conf_elsewhere_adds_its_directory(tmp_path):
    resolv = tmp_path / "r" / "resolv.conf"
    opts = runtime_options(HardenOptions(seccomp=False), api_socket="/run/user/1000/x/api.sock",
                           resolv_conf=str(resolv), autoports_pid=None)
    assert opts.keep_dirs == (str(tmp_path / "r"),)
    assert opts.proc_dirs == ("/proc/self/fd",) and not opts.seccomp
    assert KEPT_DIRS == ("/etc", "/run")


def test_a_resolv_conf_symlink_keeps_where_it_leads(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    link_dir = tmp_path / "etc"
    link_dir.mkdir()
    (link_dir / "resolv.conf").symlink_to(real / "resolv.conf")
    opts = runtime_options(HardenOptions(), api_socket=None, resolv_conf=str(link_dir / "resolv.conf"),
                           autoports_pid=None)
    assert opts.keep_dirs == (str(link_dir), str(real))



def test_the_new_root_is_never_built_in_or_under_a_kept_directory(monkeypatch):
    assert scratch_dir(KEPT_DIRS) == "/tmp"
    kept = (*KEPT_DIRS, "/tmp", "/var/lib/x")
    d = scratch_dir(kept)
    assert os.path.isdir(d) and not any(d == k or d.startswith(k + "/") for k in kept), d
    monkeypatch.setattr("slirpy.harden._SCRATCH_CHOICES", ("/tmp", "/etc"))
    with pytest.raises(HardenError, match="no directory to build the new root on"):
        scratch_dir((*KEPT_DIRS, "/tmp"))

def test_allow_list_has_no_call_that_escapes_or_changes_privileges():
    dangerous = {"execve", "execveat", "fork", "vfork", "clone", "clone3", "ptrace", "mount",
                 "umount2", "pivot_root", "unshare", "setns", "chroot", "bpf", "keyctl",
                 "io_uring_setup", "io_uring_enter", "open_by_handle_at", "process_vm_writev",
                 "init_module", "finit_module", "kexec_load", "setuid", "capset", "prctl", "seccomp"}
    assert not dangerous & set(seccompfilter.ALLOWED)
    assert len(set(seccompfilter.ALLOWED)) == len(seccompfilter.ALLOWED)


def test_message_names_the_call():
    assert seccompfilter.message(59, {59: "execve"}) == (
        b"slirpy: seccomp: forbidden system call execve (59); the hardened network process stops "
        b"here (exit status 159)\n")
    assert b"? (9999)" in seccompfilter.message(9999, {})


def _in_child(after_filter: str) -> tuple[int, str]:
    """Fork; the child loads the filter alone (no mount namespace) and runs `after_filter`."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                            # pragma: no cover (child)
        os.close(r)
        os.dup2(w, 2)
        try:
            from slirpy.harden import harden
            kept = harden(HardenOptions(sandbox=False, seccomp=True))   # noqa: F841 (keeps the handler)
            exec(after_filter)
            os._exit(0)
        except BaseException as e:                          # noqa: BLE001
            os.write(2, f"child: {e!r}\n".encode())
            os._exit(1)
    os.close(w)
    with os.fdopen(r) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def test_allowed_calls_work_under_the_filter():
    code, err = _in_child("import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.close();"
                          "os.write(2, b'fine')")
    assert (code, err) == (0, "fine")


def test_a_forbidden_call_ends_the_process_with_one_line():
    code, err = _in_child("os.execv('/bin/true', ['true'])")
    assert code == seccompfilter.EXIT_STATUS == 159
    assert err == "slirpy: seccomp: forbidden system call execve (59); the hardened network process " \
                  "stops here (exit status 159)\n"


@pytest.mark.parametrize("family", ["AF_NETLINK", "AF_PACKET"])
def test_socket_families_other_than_inet_and_unix_are_forbidden(family):
    code, err = _in_child(f"import socket; socket.socket(socket.{family}, socket.SOCK_RAW)")
    assert code == 159 and "forbidden system call socket" in err, err
