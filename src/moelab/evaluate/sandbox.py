"""Run model-written Python (a candidate solution + its unit tests) behind an operating-system boundary.

    result = run_program(prompt + completion + tests, timeout_s=10)          # isolation="bwrap" (default)
    result.passed  -> True when the program ran to its end (every assert held) and exited with status 0

Code benchmarks (HumanEval, Chen et al. 2021; MBPP, Austin et al. 2021) score a completion by executing it
together with the problem's tests. Chen et al. (Sec. 2.3) stress that such code is untrusted; their harness
runs it in a sandbox. Two isolations (config `evaluate.code_sandbox`):

`bwrap` (default, the boundary): bubblewrap (Debian package `bubblewrap`) starts the program in new user, pid,
network, IPC, UTS and cgroup namespaces as uid/gid 65534 with no capabilities; the program itself is pid 1 of
its pid namespace (`--as-pid-1`), so a time-out kill of that one process ends everything it started. It sees
a read-only /usr (+ /bin, /lib, /lib64 as on the host), /etc/ld.so.cache and the base interpreter's prefix
(stdlib only: `-S`, its site-packages hidden): no venv, no /work, /root or /home, no host /tmp; a private
/proc, a read-only /dev, a 64 MiB tmpfs /tmp (cwd /tmp/work) and a 1 MiB tmpfs /dev/shm; no network interface
but a down loopback. Before the program runs, the guard installs the seccomp filter of
`moelab.evaluate.seccomp` (fork/exec/sockets/ptrace/mounts/namespaces/... refused) and sets
RLIMIT_NOFILE 256 and PR_SET_DUMPABLE 0. Needs unprivileged user namespaces (or root); where they are off,
`SandboxUnavailableError` says what to do. Not covered: kernel bugs reachable through the allowed system
calls, CPU and memory side channels, reading the (public) files of /usr.

`process` (NOT a boundary, for machines without user namespaces, chosen knowingly): today's in-process guard,
a fresh `python -I -S -B` with a minimal environment in a temp dir, `unshare -n` when it works, and an audit
hook (PEP 578) that refuses sockets, process creation and writes outside the temp dir. Code that uses ctypes
or other C-level routes gets past it.

Both: wall-clock time-out (the process tree is killed), RLIMIT_CPU, RLIMIT_AS (a memory bomb gets
MemoryError), RLIMIT_FSIZE (stdout included), no core dumps, and a completion token: the host passes a random
token on stdin (never in the program file or argv), the guard prints it after the program returns, and a run
passes only with exit status 0 *and* the token, so `exit(0)` / `os._exit(0)` before the tests fails. (The
token lives in the program's own process: it stops early exits, not a program that searches its memory.)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from moelab.evaluate.seccomp import filter_program

ISOLATIONS = ("bwrap", "process")
DEFAULT_ISOLATION = "bwrap"
TMP_MB = 64  # size of the sandbox's /tmp (bwrap)
SHM_MB = 1  # size of its /dev/shm (bwrap)
SANDBOX_UID = 65534  # nobody
GUARD_SETUP_FAILED = 120  # exit status of the guard when it could not set the sandbox up


class SandboxUnavailableError(RuntimeError):
    """The configured code isolation cannot run on this machine; the message says how to fix it."""


# Runs inside the child before the candidate program: limits, seccomp (bwrap), audit hook, then the program;
# prints the completion token (read from stdin) when the program returned. stdlib only: it runs in `python -S`.
_GUARD = r"""
import os, resource, sys, types

_ROOT = os.path.realpath(sys.argv[1])
_PROGRAM = sys.argv[2]
_MEMORY, _CPU, _FSIZE = (int(x) for x in sys.argv[3:6])
_SECCOMP = sys.argv[6]
_TOKEN = sys.stdin.buffer.readline().strip()
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)


def _setup_failed(why):
    sys.stderr.write(f"moelab sandbox setup failed: {why}\n")
    sys.stderr.flush()
    os._exit(120)


with open(_PROGRAM, encoding="utf-8") as _fh:
    _CODE = compile(_fh.read(), _PROGRAM, "exec")
try:
    import ctypes

    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    if _libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE 0
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY, _MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (_CPU, _CPU + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (_FSIZE, _FSIZE))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    if _SECCOMP != "-":
        with open(_SECCOMP, "rb") as _fh:
            _bpf = _fh.read()

        class _Fprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        _buf = ctypes.create_string_buffer(_bpf, len(_bpf))
        _prog = _Fprog(len(_bpf) // 8, ctypes.cast(_buf, ctypes.c_void_p))
        if _libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if _libc.prctl(22, 2, ctypes.addressof(_prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
except (OSError, ValueError, ImportError) as _exc:
    _setup_failed(_exc)

_DENIED = frozenset({
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
    "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg",
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "os.startfile", "pty.spawn", "os.kill", "os.killpg",
})
_PATH_EVENTS = {  # event -> indices of its path arguments that must stay inside the sandbox dir
    "os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.link": (0, 1), "os.symlink": (1,),
    "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.mkdir": (0,), "shutil.rmtree": (0,),
    "os.utime": (0,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _inside(path):
    if isinstance(path, int):  # an already open file descriptor
        return True
    path = os.fsdecode(path)
    real = os.path.realpath(path)
    return real == _ROOT or real.startswith(_ROOT + os.sep)


def _hook(event, args):
    if event in _DENIED:
        raise PermissionError(f"moelab sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(ch in mode for ch in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writing and path is not None and not _inside(path):
            raise PermissionError(f"moelab sandbox: writing {path!r} outside the sandbox dir is not allowed")
    elif event in _PATH_EVENTS:
        for i in _PATH_EVENTS[event]:
            if i < len(args) and args[i] is not None and not _inside(args[i]):
                raise PermissionError(f"moelab sandbox: {event} on {args[i]!r} is not allowed")


sys.addaudithook(_hook)
import builtins
builtins.exit = builtins.quit = sys.exit  # as `site` would define them (-S skips site)
_main = types.ModuleType("__main__")
_main.__file__ = _PROGRAM
sys.modules["__main__"] = _main
exec(_CODE, _main.__dict__)
sys.stdout.flush()
sys.stderr.flush()
os.write(1, b"\n" + _TOKEN + b"\n")
"""


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed run.

    status: "passed" (exit status 0 and the completion token printed: the program ran to its end), "failed"
    (non-zero exit: an assert, an exception, MemoryError, a refused operation, a resource-limit signal; or an
    exit before the end) or "timeout" (killed after `timeout_s` wall-clock seconds).
    returncode: the exit status (negative = killed by that signal; None on timeout; under bwrap the program is
        its pid namespace's init, which ignores SIGXCPU: the CPU limit then ends it with SIGKILL one second later). stdout/stderr: the
    program's output (the token removed), cut to `max_output_bytes`. wall_s: seconds.
    network_namespace: whether the program ran without the host's network (bwrap, or `unshare -n`).
    isolation: "bwrap" or "process".
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    network_namespace: bool
    isolation: str = DEFAULT_ISOLATION

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def network_namespace_available() -> bool:
    """Whether `unshare -n` can start a process in a new network namespace here (checked once; process mode)."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


_ACTIVE = [DEFAULT_ISOLATION]


def check_isolation_name(isolation: str) -> str:
    """`isolation` if it is one of ISOLATIONS. Raises ValueError naming evaluate.code_sandbox otherwise."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"evaluate.code_sandbox must be one of {ISOLATIONS}, got {isolation!r}")
    return isolation


def active_isolation() -> str:
    """The isolation `run_program(s)` use when none is given: DEFAULT_ISOLATION, or the one set by `using`."""
    return _ACTIVE[-1]


@contextlib.contextmanager
def using(isolation: str) -> Iterator[str]:
    """Make `isolation` the default of `run_program(s)` inside the block (lm-eval's metric callbacks,
    `moelab.evaluate.tasks.generation`, take no arguments of ours). Raises ValueError: an unknown name."""
    _ACTIVE.append(check_isolation_name(isolation))
    try:
        yield isolation
    finally:
        _ACTIVE.pop()


def _base_python() -> tuple[str, str]:
    """(interpreter, prefix) of the base Python (the venv's interpreter resolves to it; stdlib only)."""
    prefix = os.path.realpath(sys.base_prefix)
    for candidate in (os.path.realpath(sys.executable), getattr(sys, "_base_executable", "")):
        if (
            candidate
            and os.path.isfile(candidate)
            and (candidate.startswith(prefix + os.sep) or candidate.startswith("/usr/"))
        ):
            return candidate, prefix
    raise SandboxUnavailableError(
        f"no base interpreter under {prefix} for the code sandbox (sys.executable={sys.executable})"
    )


def bwrap_command(
    bwrap: str, inputs: Path, *, python_args: Sequence[str], info_fd: int | None = None
) -> list[str]:
    """The bubblewrap command line that runs `python <python_args>` in the sandbox (see the module docstring).

    Args:
        bwrap: path of the bwrap executable.
        inputs: host folder mounted read-only at /sandbox (guard, program, seccomp filter).
        python_args: the interpreter's arguments (paths as seen inside: /sandbox/..., /tmp/work).
        info_fd: a file descriptor bwrap writes {"child-pid": host pid} to (for the time-out kill).
    Raises:
        SandboxUnavailableError: no base interpreter found.
    """
    python, prefix = _base_python()
    cmd = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL"]
    cmd += ["--die-with-parent", "--new-session", "--as-pid-1", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    if os.path.exists("/etc/ld.so.cache"):
        cmd += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    if not prefix.startswith("/usr/"):
        cmd += ["--ro-bind", prefix, prefix]
    site = sysconfig.get_path("purelib", vars={"base": prefix, "platbase": prefix})
    if site and os.path.isdir(site):  # stdlib only: the base interpreter's installed packages hidden
        cmd += ["--tmpfs", site]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_MB * 2**20), "--tmpfs", "/dev/shm"]
    cmd += ["--remount-ro", "/dev", "--size", str(TMP_MB * 2**20), "--tmpfs", "/tmp", "--dir", "/tmp/work"]
    cmd += ["--ro-bind", str(inputs), "/sandbox", "--chdir", "/tmp/work"]
    if info_fd is not None:
        cmd += ["--info-fd", str(info_fd)]
    return [*cmd, "--", python, *python_args]


_FIXES = (
    "Fix: install bubblewrap (Debian/Ubuntu: `apt-get install -y bubblewrap`; `make setup` does it as root), "
    "and allow unprivileged user namespaces (`sysctl -w kernel.unprivileged_userns_clone=1` on Debian kernels; "
    "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` on Ubuntu >= 23.10, or an AppArmor profile "
    "for bwrap; in a container, a seccomp/security profile that permits user namespaces); or set "
    "`evaluate.code_sandbox: process` knowingly (an in-process guard, NOT a security boundary: model-written "
    "code can escape it through ctypes)."
)


@functools.cache
def _probe(isolation: str, bwrap: str | None) -> str | None:
    """None if a trivial program runs and passes under `isolation` (with this bwrap), else why not."""
    if isolation == "bwrap" and bwrap is None:
        return "bubblewrap (bwrap) is not installed (not found on PATH)."
    try:
        result = _run(
            "print(6 * 7)",
            isolation,
            bwrap,
            timeout_s=30.0,
            memory_mb=1024,
            cpu_s=30,
            max_output_bytes=100_000,
        )
    except SandboxUnavailableError as exc:
        return str(exc)
    if result.passed and result.stdout.strip() == "42":
        return None
    return f"a trivial program did not run in the {isolation} sandbox: {result.status}, {result.stderr.strip()[-500:]}"


def isolation_problem(isolation: str) -> str | None:
    """None when `isolation` works here (one trivial program run, cached per bwrap path), else the reason."""
    check_isolation_name(isolation)
    return _probe(isolation, shutil.which("bwrap") if isolation == "bwrap" else None)


def require_isolation(isolation: str) -> None:
    """Check that `isolation` works here, before model-written code is generated or run.

    Raises:
        SandboxUnavailableError: with the reason and the fix (install bubblewrap, allow user namespaces, or
            set evaluate.code_sandbox: process knowingly). Never falls back silently.
        ValueError: an unknown isolation name.
    """
    problem = isolation_problem(isolation)
    if problem is not None:
        raise SandboxUnavailableError(
            f"evaluate.code_sandbox: {isolation}: the code sandbox cannot run here: {problem} {_FIXES}"
        )


def _kill_tree(proc: subprocess.Popen, child_pid: int | None) -> None:
    """SIGKILL the sandbox's pid 1 (its pid namespace dies with it), let bwrap reap it, then SIGKILL the
    launcher's process group (process mode: the whole tree; bwrap: a launcher that did not exit)."""
    if child_pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child_pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _run(
    program: str,
    isolation: str,
    bwrap: str | None,
    *,
    timeout_s: float,
    memory_mb: int,
    cpu_s: int,
    max_output_bytes: int,
    isolate_network: bool = True,
) -> ExecResult:
    """One run of `program` under `isolation` (no availability check; see `run_program`)."""
    parent = Path(tempfile.mkdtemp(prefix="moelab_sandbox_"))
    token = secrets.token_hex(16).encode()
    info_r = info_w = None
    try:
        inputs, work = parent / "in", parent / "work"
        inputs.mkdir()
        work.mkdir()
        (inputs / "guard.py").write_text(_GUARD, encoding="utf-8")
        (inputs / "program.py").write_text(program, encoding="utf-8")
        limits = [str(memory_mb * 2**20), str(cpu_s), str(max_output_bytes)]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        env |= {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        pass_fds: tuple[int, ...] = ()
        if isolation == "bwrap":
            (inputs / "seccomp.bpf").write_bytes(filter_program())
            info_r, info_w = os.pipe()
            pass_fds = (info_w,)
            args = ["-I", "-S", "-B", "/sandbox/guard.py", "/tmp/work", "/sandbox/program.py", *limits]
            cmd = bwrap_command(
                bwrap or "bwrap", inputs, python_args=[*args, "/sandbox/seccomp.bpf"], info_fd=info_w
            )
            env |= {"HOME": "/tmp/work", "TMPDIR": "/tmp/work"}
            netns = True
        else:
            guard, prog = str(inputs / "guard.py"), str(inputs / "program.py")
            cmd = [sys.executable, "-I", "-S", "-B", guard, str(work), prog, *limits, "-"]
            netns = isolate_network and network_namespace_available()
            if netns:
                cmd = [shutil.which("unshare") or "unshare", "-n", "--", *cmd]
            env |= {"HOME": str(work), "TMPDIR": str(work)}
        start = time.perf_counter()
        with open(parent / "stdout", "wb") as out, open(parent / "stderr", "wb") as err:
            proc = subprocess.Popen(
                cmd,
                cwd=work,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                pass_fds=pass_fds,
                start_new_session=True,  # own process group: a timeout kills everything it started
            )
            if info_w is not None:
                os.close(info_w)
                info_w = None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(token + b"\n")
                proc.stdin.close()
            try:
                returncode = proc.wait(timeout=timeout_s)
                status = "passed" if returncode == 0 else "failed"
                if isolation == "bwrap" and returncode > 128:  # bwrap exits 128 + signal of its child
                    returncode = 128 - returncode
            except subprocess.TimeoutExpired:
                child_pid = _read_child_pid(info_r) if info_r is not None else None
                _kill_tree(proc, child_pid)
                proc.wait()
                returncode, status = None, "timeout"
        wall = time.perf_counter() - start
        raw_out = (parent / "stdout").read_bytes()
        stderr = (parent / "stderr").read_bytes()[:max_output_bytes].decode("utf-8", "replace")
        if info_r is not None and status != "timeout" and _read_child_pid(info_r) is None:
            raise SandboxUnavailableError(f"bubblewrap failed to start the sandbox: {stderr.strip()[-1000:]}")
        finished = raw_out.endswith(b"\n" + token + b"\n")
        if finished:
            raw_out = raw_out[: -len(token) - 2]
        elif status == "passed":
            status = "failed"  # exited with 0 before the end of the program (exit(0), os._exit(0))
        stdout = raw_out[:max_output_bytes].decode("utf-8", "replace")
        return ExecResult(status, returncode, stdout, stderr, wall, netns, isolation)
    finally:
        for fd in (info_r, info_w):
            if fd is not None:
                os.close(fd)
        shutil.rmtree(parent, ignore_errors=True)


def _read_child_pid(info_r: int) -> int | None:
    """The host pid of the sandbox's pid 1, from bwrap's --info-fd JSON (None: bwrap never started it)."""
    os.set_blocking(info_r, False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(info_r, 4096):
            data += chunk
    try:
        return int(json.loads(data)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


def run_program(
    program: str,
    *,
    isolation: str | None = None,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    cpu_s: int | None = None,
    max_output_bytes: int = 1_000_000,
    isolate_network: bool = True,
) -> ExecResult:
    """Execute Python source in the sandbox (see the module docstring for the two isolations).

    Args:
        program: the full program text (e.g. HumanEval prompt + completion + test + `check(entry_point)`).
        isolation: "bwrap" or "process"; None = `active_isolation()` (DEFAULT_ISOLATION unless inside `using`).
        timeout_s: wall-clock limit in seconds; the whole process tree is killed when it is reached.
        memory_mb: address-space limit (RLIMIT_AS) in MiB.
        cpu_s: CPU-time limit (RLIMIT_CPU) in seconds; default ceil(timeout_s) + 1, so that a single-threaded
            busy loop reaches the wall-clock limit first (at ceil(timeout_s) the two raced).
        max_output_bytes: the largest file the program may write, its stdout/stderr included (RLIMIT_FSIZE).
        isolate_network: process mode: run under `unshare -n` when available (bwrap always has no network).
    Returns:
        an `ExecResult`; `.passed` is True iff the program ran to its end and exited with status 0 in time.
    Raises:
        ValueError: a non-positive limit or an unknown isolation.
        SandboxUnavailableError: the isolation cannot run here (checked once per process; see
            `require_isolation`), or bubblewrap failed to start this run.
    """
    if timeout_s <= 0 or memory_mb <= 0 or max_output_bytes <= 0 or (cpu_s is not None and cpu_s <= 0):
        raise ValueError(
            f"sandbox limits must be positive: timeout_s={timeout_s}, memory_mb={memory_mb}, "
            f"cpu_s={cpu_s}, max_output_bytes={max_output_bytes}"
        )
    isolation = check_isolation_name(isolation or active_isolation())
    require_isolation(isolation)
    cpu_s = cpu_s or int(-(-timeout_s // 1)) + 1  # one second past the wall limit: a busy loop times out
    bwrap = shutil.which("bwrap") if isolation == "bwrap" else None
    return _run(
        program,
        isolation,
        bwrap,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        cpu_s=cpu_s,
        max_output_bytes=max_output_bytes,
        isolate_network=isolate_network,
    )


def run_programs(
    programs: Sequence[str], *, workers: int = 2, isolation: str | None = None, **limits
) -> list[ExecResult]:
    """`run_program` over many programs, `workers` at a time (threads waiting on child processes).

    Returns:
        one `ExecResult` per program, in input order. `limits` are `run_program`'s keyword arguments;
        `isolation` None = `active_isolation()` of the calling thread's block.
    Raises:
        ValueError: workers < 1; otherwise as `run_program`.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    isolation = isolation or active_isolation()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run_program(p, isolation=isolation, **limits), programs))
