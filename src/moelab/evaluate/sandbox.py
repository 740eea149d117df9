"""Run model-written Python (a candidate solution + its unit tests) in a separate, restricted process.

    result = run_program(prompt + completion + tests, timeout_s=10)
    result.passed  -> True when the program exited with status 0 (every assert held)

Code benchmarks (HumanEval, Chen et al. 2021; MBPP, Austin et al. 2021) score a completion by executing it
together with the problem's tests. Chen et al. (Sec. 2.3) stress that such code is untrusted; their harness
runs it in a sandbox. Ours, layer by layer (best effort: it stops accidents and naive misuse, it is not a
security boundary against a determined attacker; run untrusted models in a container as well):

- a fresh interpreter, `python -I -B` (isolated mode: no PYTHONPATH, no user site, no bytecode written), with a
  minimal environment, its cwd a new temp dir that is deleted afterwards;
- wall-clock timeout (the whole process group is killed), RLIMIT_CPU (CPU seconds), RLIMIT_AS (address space,
  so a memory bomb gets MemoryError), RLIMIT_FSIZE (largest file it may write, stdout included), no core dumps;
  the child sets these limits itself before the program starts (no preexec_fn: unsafe in threaded parents);
- no network: when `unshare -n` works (Linux, root or user namespaces) the process runs in a new network
  namespace with no interfaces; in every case an audit hook (PEP 578, installed before the program runs)
  raises PermissionError on socket creation/connect/bind/DNS, on starting processes (subprocess, os.system,
  exec, fork, spawn, kill), and on opening for writing, deleting, renaming or chmod-ing any path
  outside the temp dir.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Runs inside the child before the candidate program: reads the program, installs the audit hook, execs it.
_GUARD = r"""
import os, resource, sys

_ROOT = os.path.realpath(sys.argv[1])
_PROGRAM = sys.argv[2]
_MEMORY, _CPU, _FSIZE = (int(x) for x in sys.argv[3:6])
resource.setrlimit(resource.RLIMIT_AS, (_MEMORY, _MEMORY))
resource.setrlimit(resource.RLIMIT_CPU, (_CPU, _CPU + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (_FSIZE, _FSIZE))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
with open(_PROGRAM, encoding="utf-8") as _fh:
    _CODE = compile(_fh.read(), _PROGRAM, "exec")

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
del _fh
exec(_CODE, {"__name__": "__main__", "__file__": _PROGRAM, "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed run.

    status: "passed" (exit status 0), "failed" (non-zero exit: an assert, an exception, MemoryError, a blocked
    operation, a resource-limit signal) or "timeout" (killed after `timeout_s` wall-clock seconds).
    returncode: the exit status (negative = killed by that signal; None on timeout). stdout/stderr: the
    program's output, cut to `max_output_bytes`. wall_s: seconds. network_namespace: whether `unshare -n` was used.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    network_namespace: bool

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def network_namespace_available() -> bool:
    """Whether `unshare -n` can start a process in a new network namespace here (checked once)."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def run_program(
    program: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    cpu_s: int | None = None,
    max_output_bytes: int = 1_000_000,
    isolate_network: bool = True,
) -> ExecResult:
    """Execute Python source in a restricted child process (see the module docstring for the layers).

    Args:
        program: the full program text (e.g. HumanEval prompt + completion + test + `check(entry_point)`).
        timeout_s: wall-clock limit in seconds; the process group is killed when it is reached.
        memory_mb: address-space limit (RLIMIT_AS) in MiB.
        cpu_s: CPU-time limit (RLIMIT_CPU) in seconds; default ceil(timeout_s) + 1, so that a single-threaded
            busy loop reaches the wall-clock limit first (at ceil(timeout_s) the two raced).
        max_output_bytes: the largest file the program may write, its stdout/stderr included (RLIMIT_FSIZE).
        isolate_network: run under `unshare -n` when available (the audit hook blocks sockets regardless).
    Returns:
        an `ExecResult`; `.passed` is True iff the program exited with status 0 in time.
    Raises:
        ValueError: a non-positive limit.
    """
    if timeout_s <= 0 or memory_mb <= 0 or max_output_bytes <= 0 or (cpu_s is not None and cpu_s <= 0):
        raise ValueError(
            f"sandbox limits must be positive: timeout_s={timeout_s}, memory_mb={memory_mb}, "
            f"cpu_s={cpu_s}, max_output_bytes={max_output_bytes}"
        )
    cpu_s = cpu_s or int(-(-timeout_s // 1)) + 1  # one second past the wall limit: a busy loop times out
    use_netns = isolate_network and network_namespace_available()
    parent = Path(tempfile.mkdtemp(prefix="moelab_sandbox_"))
    try:
        work = parent / "work"  # the program's cwd: the only place it may write
        work.mkdir()
        (parent / "guard.py").write_text(_GUARD, encoding="utf-8")
        (parent / "program.py").write_text(program, encoding="utf-8")
        limits = [str(memory_mb * 2**20), str(cpu_s), str(max_output_bytes)]
        cmd = [
            sys.executable,
            "-I",
            "-B",
            str(parent / "guard.py"),
            str(work),
            str(parent / "program.py"),
            *limits,
        ]
        if use_netns:
            cmd = [shutil.which("unshare") or "unshare", "-n", "--", *cmd]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work), "TMPDIR": str(work)}
        env |= {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        start = time.perf_counter()
        with open(parent / "stdout", "wb") as out, open(parent / "stderr", "wb") as err:
            proc = subprocess.Popen(
                cmd,
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # own process group: a timeout kills everything it started
            )
            try:
                returncode = proc.wait(timeout=timeout_s)
                status = "passed" if returncode == 0 else "failed"
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                returncode, status = None, "timeout"
        wall = time.perf_counter() - start
        read = lambda name: (parent / name).read_bytes()[:max_output_bytes].decode("utf-8", "replace")  # noqa: E731
        return ExecResult(status, returncode, read("stdout"), read("stderr"), wall, use_netns)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def run_programs(programs: Sequence[str], *, workers: int = 2, **limits) -> list[ExecResult]:
    """`run_program` over many programs, `workers` at a time (threads waiting on child processes).

    Returns:
        one `ExecResult` per program, in input order. `limits` are `run_program`'s keyword arguments.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run_program(p, **limits), programs))
