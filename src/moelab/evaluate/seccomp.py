"""The seccomp filter of the code sandbox: a classic BPF program, built here, installed inside the sandbox.

    program = filter_program()   # bytes: struct sock_filter[] (8 bytes per instruction, native byte order)
    # the guard (moelab.evaluate.sandbox) installs it: prctl(PR_SET_NO_NEW_PRIVS), prctl(PR_SET_SECCOMP, ...)

The kernel runs the program on every system call of the filtered process (Linux
Documentation/userspace-api/seccomp_filter.rst) over `struct seccomp_data` {int nr; u32 arch;
u64 instruction_pointer; u64 args[6]} and acts on the returned verdict. Ours:

- arch x86_64 or aarch64 (the two syscall tables below), any other arch (e.g. i386 `int 0x80` on x86_64) is
  killed; x86_64 x32 calls (nr with bit 0x40000000) get EPERM;
- EPERM for process creation (fork, vfork, clone without CLONE_THREAD or with a namespace flag: threads stay
  allowed), exec, sockets, tracing and other processes' memory, mounts and namespaces, bpf / perf / userfaultfd /
  io_uring, keyrings, kernel modules and kexec, pidfd access, fallocate, SysV / POSIX IPC, memfd, inotify /
  fanotify and prctl(PR_SET_PDEATHSIG); clone3 gets ENOSYS (its flags live in memory the filter cannot read;
  glibc then falls back to clone, which is checked);
- everything else is allowed (the mount, pid, network and user namespaces of bubblewrap do the rest).

Only the low 32 bits of an argument are compared: the kernel reads clone's flags and prctl's option as 32-bit.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

# BPF opcodes (linux/filter.h, linux/bpf_common.h)
LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = the 32-bit word at offset k of seccomp_data
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K: pc += (A == k) ? jt : jf
JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K: pc += (A & k) ? jt : jf
RET_K = 0x06  # BPF_RET | BPF_K: return k

# seccomp verdicts (linux/seccomp.h) and errno values (identical on x86_64 and aarch64)
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
EPERM, ENOSYS = 1, 38

# offsets into struct seccomp_data
OFF_NR, OFF_ARCH = 0, 4


def off_arg(i: int) -> int:
    """Offset of the low 32 bits of syscall argument i (little-endian: x86_64 and aarch64)."""
    return 16 + 8 * i


AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # linux/audit.h
X32_BIT = 0x40000000
CLONE_THREAD = 0x00010000
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
PR_SET_PDEATHSIG = 1

# Refused system calls (EPERM), by name; absent names do not exist on that arch (aarch64 has no fork, vfork,
# inotify_init: its libc uses clone and inotify_init1).
DENIED = (
    "fork", "vfork", "execve", "execveat", "socket", "socketpair", "ptrace", "process_vm_readv",
    "process_vm_writev", "mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "unshare", "setns", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "add_key", "request_key", "keyctl", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "pidfd_open", "pidfd_getfd",
    "fallocate", "shmget", "shmat", "msgget", "msgsnd", "semget", "mq_open", "memfd_create", "inotify_init",
    "inotify_init1", "fanotify_init", "open_by_handle_at", "kcmp",
)  # fmt: skip

# System call numbers: arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h (aarch64).
SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "execve": 59, "execveat": 322, "socket": 41,
        "socketpair": 53, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "mount": 165,
        "umount2": 166, "pivot_root": 155, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "unshare": 272, "setns": 308, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "add_key": 248, "request_key": 249, "keyctl": 250, "kexec_load": 246,
        "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
        "pidfd_open": 434, "pidfd_getfd": 438, "fallocate": 285, "shmget": 29, "shmat": 30, "msgget": 68,
        "msgsnd": 69, "semget": 64, "mq_open": 240, "memfd_create": 319, "inotify_init": 253,
        "inotify_init1": 294, "fanotify_init": 300, "open_by_handle_at": 304, "kcmp": 312, "prctl": 157,
        "getpid": 39, "write": 1,  # allowed: samples for the tests
    },
    "aarch64": {
        "clone": 220, "clone3": 435, "execve": 221, "execveat": 281, "socket": 198, "socketpair": 199,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "mount": 40, "umount2": 39,
        "pivot_root": 41, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
        "fspick": 433, "mount_setattr": 442, "unshare": 97, "setns": 268, "bpf": 280, "perf_event_open": 241,
        "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "add_key": 217, "request_key": 218, "keyctl": 219, "kexec_load": 104, "kexec_file_load": 294,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "pidfd_open": 434, "pidfd_getfd": 438,
        "fallocate": 47, "shmget": 194, "shmat": 196, "msgget": 186, "msgsnd": 189, "semget": 190,
        "mq_open": 180, "memfd_create": 279, "inotify_init1": 26, "fanotify_init": 262,
        "open_by_handle_at": 265, "kcmp": 272, "prctl": 167, "getpid": 172, "write": 64,
    },
}  # fmt: skip


def _arch_section(arch: str) -> list[tuple]:
    """Instructions of one arch's table; jump targets are labels ("eperm", "enosys", "allow", local names)."""
    nrs = SYSCALLS[arch]
    code: list[tuple] = [("label", arch), (LD_W_ABS, OFF_NR)]
    if arch == "x86_64":
        code.append((JSET_K, X32_BIT, "eperm", None))
    for name in DENIED:
        if name in nrs:
            code.append((JEQ_K, nrs[name], "eperm", None))
    code += [
        (JEQ_K, nrs["clone3"], "enosys", None),
        (JEQ_K, nrs["clone"], f"{arch}_clone", None),
        (JEQ_K, nrs["prctl"], f"{arch}_prctl", None),
        (RET_K, RET_ALLOW),
        ("label", f"{arch}_clone"),  # a thread: CLONE_THREAD set and no namespace flag
        (LD_W_ABS, off_arg(0)),
        (JSET_K, CLONE_THREAD, None, "eperm"),
        (JSET_K, CLONE_NAMESPACES, "eperm", "allow"),
        ("label", f"{arch}_prctl"),
        (LD_W_ABS, off_arg(0)),
        (JEQ_K, PR_SET_PDEATHSIG, "eperm", "allow"),
    ]
    return code


def _assemble(code: Sequence[tuple]) -> bytes:
    """Resolve labels into forward jump offsets (relative to the next instruction, 0..255) and pack."""
    labels, pc = {}, 0
    for item in code:
        if item[0] == "label":
            labels[item[1]] = pc
        else:
            pc += 1
    out, pc = [], 0

    def offset(target, at):
        if target is None:
            return 0
        delta = labels[target] - at - 1
        if not 0 <= delta <= 255:
            raise ValueError(f"BPF jump to {target!r} out of range ({delta})")
        return delta

    for item in code:
        if item[0] == "label":
            continue
        op, k = item[0], item[1]
        jt, jf = (offset(item[2], pc), offset(item[3], pc)) if len(item) == 4 else (0, 0)
        out.append(struct.pack("=HBBI", op, jt, jf, k))
        pc += 1
    return b"".join(out)


def filter_program() -> bytes:
    """The sandbox's seccomp filter as packed `struct sock_filter` instructions (see the module docstring).

    Returns:
        bytes of length 8 * n_instructions, ready for `struct sock_fprog` and prctl(PR_SET_SECCOMP).
    """
    code: list[tuple] = [
        (LD_W_ABS, OFF_ARCH),
        (JEQ_K, AUDIT_ARCH["x86_64"], "x86_64", None),
        (JEQ_K, AUDIT_ARCH["aarch64"], "aarch64", None),
        (RET_K, RET_KILL_PROCESS),
    ]
    code += _arch_section("x86_64") + _arch_section("aarch64")
    code += [
        ("label", "eperm"),
        (RET_K, RET_ERRNO | EPERM),
        ("label", "enosys"),
        (RET_K, RET_ERRNO | ENOSYS),
        ("label", "allow"),
        (RET_K, RET_ALLOW),
    ]
    return _assemble(code)
