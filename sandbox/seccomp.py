"""The seccomp filter every sandboxed run gets, compiled by libseccomp (through pyseccomp) to the
BPF program bubblewrap loads with `--seccomp FD` just before it executes the code.

Default allow; the calls below answer EPERM (so a test sees a PermissionError, not a crash). They
are the ones a test never needs and an escape always does: joining or making namespaces, mounting,
tracing another process, loading kernel code or keys, io_uring (its operations bypass seccomp),
and every socket family but AF_UNIX (Python's multiprocessing uses socketpair). A 32-bit or x32
system call is killed: libseccomp's filter refuses architectures it was not built for.
"""

from __future__ import annotations

import errno
import functools
import os

DENIED = (
    # namespaces and mounts: no way back to the host's
    "setns",
    "unshare",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "name_to_handle_at",
    "open_by_handle_at",
    # other processes' memory
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    # kernel code, keys, tracing
    "bpf",
    "keyctl",
    "add_key",
    "request_key",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "lookup_dcookie",
    "fanotify_init",
    # io_uring runs operations that seccomp never sees
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # the machine's state
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "iopl",
    "ioperm",
    "vhangup",
    "personality",
)
CLONE_NAMESPACE_FLAGS = (
    0x00020000,
    0x02000000,
    0x04000000,
    0x08000000,
    0x10000000,
    0x20000000,
    0x40000000,
    0x00000080,
)  # NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET NEWTIME
AF_UNIX = 1


class SeccompUnavailable(RuntimeError):
    pass


@functools.cache
def compiled_filter() -> bytes:
    """The BPF program, built once per process."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as err:  # OSError: libseccomp.so.2 is missing
        raise SeccompUnavailable(f"libseccomp is not usable ({err}): apt-get install libseccomp2") from err
    f = sc.SyscallFilter(sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    for name in DENIED:
        try:
            f.add_rule(deny, name)
        except (ValueError, OSError):  # a call this kernel or libseccomp does not know: nothing to deny
            continue
    for flag in CLONE_NAMESPACE_FLAGS:
        f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(
        sc.ERRNO(errno.ENOSYS), "clone3"
    )  # its flags sit in memory seccomp cannot read: libc falls back to clone
    for call in ("socket", "socketpair"):
        f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), call, sc.Arg(0, sc.NE, AF_UNIX))
    fd = os.memfd_create("specmill-seccomp")
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            f.export_bpf(out)
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def filter_fd() -> int:
    """A fresh fd holding the program, positioned at its start (bubblewrap reads it to EOF)."""
    program = compiled_filter()
    fd = os.memfd_create("specmill-seccomp-run")
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
