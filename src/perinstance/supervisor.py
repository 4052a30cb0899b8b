"""A job stops, publishing nothing, once the Snakemake process that started it is gone.

When Snakemake is killed (SIGKILL, the OOM killer, a dropped SSH connection) its running local jobs
are not: each `python -m perinstance <job>` keeps running as an orphan and would publish its
outputs into a results tree that the next Snakemake run has already judged incomplete, or is
rebuilding itself. The Snakefile names its own process in the environment variable
`PERINSTANCE_SUPERVISOR` as ``<pid>:<start time>`` (`export_supervisor`), every job inherits it,
and `perinstance.cli.main` starts `watch`: a daemon thread that checks every second that this
process still exists and otherwise ends the job at once with exit status `ORPHANED` and one
line on stderr (the job's log). `io.atomic_path` and `io.publish_dir` call `check` just before
their rename, so that no output is published in the second between two checks.

The start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) makes a reused pid
count as gone. The variable is set anew by every Snakemake that parses the Snakefile: inside a
SLURM job it names that job's own Snakemake on its node. Unset or empty (a command run by hand,
tests calling jobs directly) nothing is watched. Without ``/proc`` (macOS, Windows) the guard is
a no-op: the Snakefile removes the variable and `watch` and `check` do nothing.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

ENV = "PERINSTANCE_SUPERVISOR"
# exit status of a job whose Snakemake is gone (EX_TEMPFAIL: the next run redoes the job)
ORPHANED = 75
INTERVAL_S = 1.0

_PROC = Path("/proc")


def start_time(pid: int) -> int | None:
    """Start time of process `pid` in clock ticks since boot; None if there is no such living
    process (a zombie, killed and not yet reaped by its parent, is dead) or no /proc."""
    try:
        stat = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        if fields[0] in (b"Z", b"X"):  # field 3 of stat(5), the state: zombie or dead
            return None
        return int(fields[19])  # field 22, starttime
    except (IndexError, ValueError):
        return None


def token(pid: int | None = None) -> str | None:
    """``<pid>:<start time>`` of process `pid` (default: this one), or None without /proc."""
    pid = os.getpid() if pid is None else pid
    started = start_time(pid)
    return None if started is None else f"{pid}:{started}"


def export_supervisor() -> None:
    """Name this process as the supervisor of the jobs it starts (called by the Snakefile).

    Always overwrites: an inherited value names some other process (the login node's Snakemake
    inside a SLURM job). Without /proc the variable is removed, so that no job watches anything.
    """
    value = token()
    if value is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = value


def supervisor() -> tuple[int, int] | None:
    """The (pid, start time) named by `PERINSTANCE_SUPERVISOR`, or None when it is unset or empty
    or there is no /proc. A malformed value raises ValueError naming the variable."""
    value = os.environ.get(ENV, "").strip()
    if not value or not _PROC.joinpath("self", "stat").exists():
        return None
    pid, sep, started = value.partition(":")
    if not (sep and pid.isdigit() and started.isdigit()):
        raise ValueError(f"environment variable {ENV} is {value!r}; expected <pid>:<start time>, or unset")
    return int(pid), int(started)


def alive(named: tuple[int, int]) -> bool:
    """Whether the process `named` (pid, start time) still exists, and is not a reused pid."""
    pid, started = named
    return start_time(pid) == started


def _orphaned(named: tuple[int, int]) -> None:
    message = (
        f"perinstance: the supervising Snakemake (pid {named[0]}) is gone; stopping without "
        f"publishing (exit {ORPHANED}); rerun Snakemake to redo this job\n"
    )
    try:
        os.write(2, message.encode())  # not sys.stderr: its lock may be held by the main thread
    finally:
        os._exit(ORPHANED)


def check() -> None:
    """End the process at once (exit status `ORPHANED`) if its supervisor is set and gone."""
    named = supervisor()
    if named is not None and not alive(named):
        _orphaned(named)


def watch(interval_s: float = INTERVAL_S) -> threading.Thread | None:
    """Check now, then every `interval_s` seconds in a daemon thread, that the supervisor lives;
    without a supervisor (variable unset, no /proc) do nothing and return None."""
    try:
        named = supervisor()
    except ValueError as err:
        raise SystemExit(f"perinstance: error: {err}") from None
    if named is None:
        return None
    if not alive(named):
        _orphaned(named)

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            if not alive(named):
                _orphaned(named)

    thread = threading.Thread(target=loop, name="perinstance-supervisor", daemon=True)
    thread.start()
    return thread
