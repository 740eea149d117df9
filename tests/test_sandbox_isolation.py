"""The code sandbox as an attacker would try it (moelab.evaluate.sandbox, moelab.evaluate.seccomp).

Each escape route is checked by looking for its effect afterwards (a marker file, a process, a connection), not
by the exit status alone; where a check could pass vacuously, a positive control shows it can fail.
"""

import os
import socket
import struct
import threading
import time
import uuid

import pytest

from moelab.evaluate import sandbox, seccomp
from moelab.evaluate.sandbox import SandboxUnavailableError, run_program

needs_bwrap = pytest.mark.skipif(
    sandbox.isolation_problem("bwrap") is not None, reason="bubblewrap / user namespaces unavailable here"
)
LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


# ---------------------------------------------------------------- the BPF filter, interpreted


def bpf_verdict(program: bytes, arch: int, nr: int, args=(0,) * 6) -> int:
    """A tiny classic-BPF interpreter (the instructions our filter uses) over one struct seccomp_data."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *args)
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == seccomp.LD_W_ABS:
            (acc,) = struct.unpack_from("=I", data, k)
        elif code == seccomp.JEQ_K:
            pc += jt if acc == k else jf
        elif code == seccomp.JSET_K:
            pc += jt if acc & k else jf
        elif code == seccomp.RET_K:
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")


EPERM = seccomp.RET_ERRNO | seccomp.EPERM
THREAD_FLAGS = 0x003D0F00  # glibc pthread_create: CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|...TID


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_filter_verdicts_on_sample_syscalls(arch):
    program, a, nrs = seccomp.filter_program(), seccomp.AUDIT_ARCH[arch], seccomp.SYSCALLS[arch]
    assert len(program) % 8 == 0 and len(program) // 8 < 4096
    denied = [n for n in seccomp.DENIED if n in nrs]
    assert len(denied) >= 45
    for name in denied:
        assert bpf_verdict(program, a, nrs[name]) == EPERM, name
    assert bpf_verdict(program, a, nrs["getpid"]) == seccomp.RET_ALLOW
    assert bpf_verdict(program, a, nrs["write"], (1, 0, 5, 0, 0, 0)) == seccomp.RET_ALLOW
    assert bpf_verdict(program, a, nrs["clone3"]) == seccomp.RET_ERRNO | seccomp.ENOSYS
    assert bpf_verdict(program, a, nrs["clone"], (17, 0, 0, 0, 0, 0)) == EPERM  # fork = clone(SIGCHLD)
    assert bpf_verdict(program, a, nrs["clone"], (0x4111, 0, 0, 0, 0, 0)) == EPERM  # vfork-like spawn
    assert bpf_verdict(program, a, nrs["clone"], (THREAD_FLAGS, 0, 0, 0, 0, 0)) == seccomp.RET_ALLOW
    assert bpf_verdict(program, a, nrs["clone"], (THREAD_FLAGS | 0x10000000, 0, 0, 0, 0, 0)) == EPERM
    assert bpf_verdict(program, a, nrs["prctl"], (seccomp.PR_SET_PDEATHSIG, 9, 0, 0, 0, 0)) == EPERM
    assert bpf_verdict(program, a, nrs["prctl"], (15, 0, 0, 0, 0, 0)) == seccomp.RET_ALLOW  # PR_SET_NAME


def test_filter_kills_foreign_arches_and_refuses_x32():
    program = seccomp.filter_program()
    for arch in (0x40000003, 0x40000028, 0):  # i386 (int 0x80 on x86_64), arm, garbage
        assert bpf_verdict(program, arch, 39) == seccomp.RET_KILL_PROCESS
    x86 = seccomp.AUDIT_ARCH["x86_64"]
    assert bpf_verdict(program, x86, 1 | seccomp.X32_BIT) == EPERM  # x32 write
    assert bpf_verdict(program, x86, 1) == seccomp.RET_ALLOW


# ---------------------------------------------------------------- escape routes under bwrap


@needs_bwrap
def test_ctypes_system_leaves_no_marker_on_the_host():
    marker = f"/tmp/moelab_marker_{uuid.uuid4().hex}"
    result = run_program(LIBC + f"print(libc.system(b'touch {marker}'))\n", isolation="bwrap")
    assert result.passed and result.stdout.strip() == str(127 << 8)  # the shell never started
    assert not os.path.exists(marker)


def test_process_mode_is_not_a_boundary(tmp_path):
    """Positive control: the same route does escape the in-process guard (why bwrap is the default)."""
    marker = tmp_path / "escaped"
    result = run_program(LIBC + f"print(libc.system(b'touch {marker}'))\n", isolation="process")
    assert result.passed and marker.exists()


@needs_bwrap
def test_ctypes_fork_is_refused():
    program = LIBC + (
        "pids = [libc.fork() for _ in range(50)]\n"
        "print(sorted(set(pids)), ctypes.get_errno())\n"
        "print(len([p for p in os.listdir('/proc') if p.isdigit()]))\n"
    )
    result = run_program(program, isolation="bwrap")
    assert result.passed, result.stderr
    assert result.stdout.split("\n")[:2] == ["[-1] 1", "1"]  # 50 x EPERM; one process in its pid namespace


@needs_bwrap
def test_subprocess_os_system_and_exec_are_refused(tmp_path):
    marker = tmp_path / "ran"
    for program in (
        f"import subprocess\nsubprocess.run(['touch', {str(marker)!r}])\n",
        f"import os\nos.system('touch {marker}')\n",
    ):
        result = run_program(program, isolation="bwrap")
        assert result.status == "failed" and "PermissionError" in result.stderr
    execv = LIBC + (
        "argv = (ctypes.c_char_p * 3)(b'/usr/bin/touch', b'/tmp/work/ran', None)\n"
        "print(libc.execv(b'/usr/bin/touch', argv), ctypes.get_errno(), os.path.exists('/tmp/work/ran'))\n"
    )
    result = run_program(execv, isolation="bwrap")
    assert result.passed and result.stdout.strip() == "-1 1 False"
    assert not marker.exists()


def _processes_with_comm(comm: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as fh, open(f"/proc/{pid}/stat") as st:
                if (
                    fh.read().strip() == comm and st.read().rsplit(")", 1)[1].split()[0] != "Z"
                ):  # not a zombie
                    found.append(int(pid))
        except OSError:
            continue
    return found


@needs_bwrap
def test_setsid_and_sleep_past_the_timeout_is_dead_afterwards():
    comm = f"mx{uuid.uuid4().hex[:10]}"  # a unique process name (comm holds 15 chars)
    # --new-session already made it a session leader: setsid() may fail, it then sleeps in its own session
    program = (
        LIBC
        + f"libc.prctl(15, b'{comm}', 0, 0, 0)\n"
        + ("try:\n    os.setsid()\nexcept OSError:\n    pass\nimport time\ntime.sleep(60)\n")
    )
    seen, results = [], []
    runner = threading.Thread(
        target=lambda: results.append(run_program(program, timeout_s=3, isolation="bwrap"))
    )
    runner.start()
    for _ in range(40):  # positive control: while it runs, the host sees it
        seen = _processes_with_comm(comm)
        if seen:
            break
        time.sleep(0.05)
    runner.join()
    assert seen, "the sandboxed process never showed up under its name"
    assert results[0].status == "timeout" and results[0].wall_s < 10
    time.sleep(0.2)
    assert _processes_with_comm(comm) == []


@needs_bwrap
def test_writes_outside_the_temp_dir_leave_nothing(tmp_path):
    target = tmp_path / "escaped.txt"
    paths = [str(target), "/usr/escaped.txt", "/tmp/escaped.txt", "/sandbox/program.py"]
    program = LIBC + (
        f"for p in {paths!r}:\n"
        "    fd = libc.open(p.encode(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n"
        "    print(p, fd, ctypes.get_errno())\n"
        "    if fd >= 0: libc.write(fd, b'x', 1)\n"
    )
    result = run_program(program, isolation="bwrap")
    assert result.passed, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines[str(target)] == "-1 2"  # ENOENT: the host's tmp_path does not exist in there
    assert lines["/usr/escaped.txt"] == "-1 30"  # EROFS
    assert lines["/sandbox/program.py"] == "-1 30"
    assert not target.exists() and not os.path.exists("/usr/escaped.txt")
    assert not os.path.exists("/tmp/escaped.txt")  # the sandbox's /tmp is its own tmpfs


@needs_bwrap
def test_host_files_are_invisible(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    program = (
        "import os\n"
        f"print(os.path.exists({str(secret)!r}), os.path.exists('/work'), os.path.exists('/home'))\n"
        "print(sorted(os.listdir('/root')) if os.path.exists('/root') else [])\n"
        "print(sorted(os.listdir('/tmp')))\n"
    )
    result = run_program(program, isolation="bwrap")
    assert result.passed, result.stderr
    visible, root, tmp = result.stdout.strip().splitlines()
    assert visible == "False False False"
    assert root in ("[]", "['.pyenv']")  # at most the path down to the base interpreter's prefix
    assert tmp == "['work']"
    control = run_program(program, isolation="process")  # positive control: the check can fail
    assert control.stdout.splitlines()[0].startswith("True")


@needs_bwrap
def test_a_socket_to_a_host_listener_gets_no_connection():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        program = LIBC + (
            "print(libc.socket(2, 1, 0), ctypes.get_errno())\n"  # AF_INET, SOCK_STREAM through ctypes
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        )
        result = run_program(program, isolation="bwrap")
        assert result.status == "failed" and result.stdout.strip() == "-1 1"
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


@needs_bwrap
def test_the_tmpfs_size_cap_holds():
    program = (
        "total = 0\n"
        "try:\n"
        "    with open('big', 'wb') as fh:\n"
        "        for _ in range(200):\n"
        "            fh.write(b'x' * 2**20)\n"
        "            fh.flush()\n"
        "            total += 1\n"
        "except OSError as exc:\n"
        "    print(total, exc.errno)\n"
    )
    result = run_program(program, isolation="bwrap", max_output_bytes=400 * 2**20)
    written, errno = result.stdout.split()
    assert errno == "28" and int(written) <= sandbox.TMP_MB  # ENOSPC at the 64 MiB cap


@pytest.mark.parametrize("isolation", ["bwrap", "process"])
@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "exit(0)"])
def test_exiting_before_the_tests_fails(isolation, exit_call):
    if isolation == "bwrap" and sandbox.isolation_problem("bwrap") is not None:
        pytest.skip("bubblewrap unavailable")
    program = f"def f():\n    return 1\n\n{exit_call}\nassert f() == 2\n"
    result = run_program(program, isolation=isolation)
    assert result.returncode == 0 and result.status == "failed"
    honest = run_program("def f():\n    return 2\n\nassert f() == 2\nprint('ok')\n", isolation=isolation)
    assert honest.passed and honest.stdout == "ok\n"  # the token is stripped from the output


@pytest.mark.parametrize("isolation", ["bwrap", "process"])
def test_a_correct_solution_passes_and_a_wrong_one_fails(isolation):
    if isolation == "bwrap" and sandbox.isolation_problem("bwrap") is not None:
        pytest.skip("bubblewrap unavailable")
    tests = "\n\ndef check(candidate):\n    assert candidate([3, 1, 2]) == [1, 2, 3]\n\ncheck(sort_list)\n"
    good = run_program("def sort_list(xs):\n    return sorted(xs)\n" + tests, isolation=isolation)
    bad = run_program("def sort_list(xs):\n    return xs\n" + tests, isolation=isolation)
    assert good.passed and good.isolation == isolation
    assert bad.status == "failed" and "AssertionError" in bad.stderr


# ---------------------------------------------------------------- unavailable isolation: a clear error


def test_missing_bwrap_raises_with_the_fix(monkeypatch):
    real_which = sandbox.shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    with pytest.raises(SandboxUnavailableError) as err:
        run_program("print(1)\n", isolation="bwrap")
    message = str(err.value)
    for part in ("not installed", "apt-get install -y bubblewrap", "unprivileged_userns_clone",
                 "apparmor_restrict_unprivileged_userns", "evaluate.code_sandbox: process"):  # fmt: skip
        assert part in message
    assert run_program("print(1)\n", isolation="process").passed  # the knowing choice still works


def test_a_bwrap_that_cannot_create_namespaces_raises(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    real_which = sandbox.shutil.which
    monkeypatch.setattr(
        sandbox.shutil, "which", lambda name: str(fake) if name == "bwrap" else real_which(name)
    )
    with pytest.raises(SandboxUnavailableError, match="No permissions to create new namespace"):
        sandbox.require_isolation("bwrap")
    with pytest.raises(ValueError, match="evaluate.code_sandbox"):
        sandbox.require_isolation("docker")
