"""The orphan guard (perinstance.supervisor): a job whose supervising process is gone stops at once
and publishes nothing; without a supervisor nothing changes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perinstance import supervisor
from perinstance.supervisor import ENV, ORPHANED

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the guard needs /proc (Linux)")

# a job stand-in: the CLI's watchdog, then work that would publish a file after a while
JOB = """
import sys, time
from pathlib import Path
from perinstance import io, supervisor
supervisor.watch(interval_s=0.05)
print("started", flush=True)
time.sleep(float(sys.argv[2]))
io.save_json({"done": True}, Path(sys.argv[1]))
"""


def job(out: Path, seconds: float, value: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if value is not None:
        env[ENV] = value
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(out), str(seconds)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def fake_supervisor():
    sleeper = subprocess.Popen(["sleep", "60"])
    yield sleeper
    sleeper.kill()
    sleeper.wait()


def test_the_job_stops_without_publishing_once_its_supervisor_is_killed(tmp_path, fake_supervisor):
    out = tmp_path / "out.json"
    child = job(out, 30, supervisor.token(fake_supervisor.pid))
    assert child.stdout.readline() == "started\n"  # the supervisor lives: the job runs
    started = time.monotonic()
    fake_supervisor.kill()  # not reaped yet: a zombie counts as gone
    _, err = child.communicate(timeout=20)
    assert child.returncode == ORPHANED and time.monotonic() - started < 10
    assert f"supervising Snakemake (pid {fake_supervisor.pid}) is gone" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_living_supervisor_lets_the_job_publish(tmp_path, fake_supervisor):
    out = tmp_path / "out.json"
    child = job(out, 0.3, supervisor.token(fake_supervisor.pid))
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.is_file()


@pytest.mark.parametrize("value", [None, ""])
def test_without_a_supervisor_nothing_is_watched(tmp_path, value, monkeypatch):
    out = tmp_path / "out.json"
    child = job(out, 0.3, value)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.is_file()
    monkeypatch.delenv(ENV, raising=False)
    assert supervisor.watch() is None


def test_a_wrong_start_time_is_a_reused_pid(tmp_path, fake_supervisor):
    # the pid lives, but it is not the process that was named: the job stops at its first check
    pid, started = supervisor.token(fake_supervisor.pid).split(":")
    out = tmp_path / "out.json"
    child = job(out, 30, f"{pid}:{int(started) + 1}")
    _, err = child.communicate(timeout=60)
    assert child.returncode == ORPHANED, err
    assert not out.exists()


def test_the_publish_path_checks_too(tmp_path, fake_supervisor):
    # no watchdog thread (a library caller): the write itself refuses to rename into place
    value = supervisor.token(fake_supervisor.pid)
    fake_supervisor.kill()
    fake_supervisor.wait()
    out = tmp_path / "out.json"
    code = f"from perinstance import io; io.save_json({{}}, {str(out)!r})"
    env = {**os.environ, ENV: value}
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert child.returncode == ORPHANED, child.stderr
    assert not out.exists()


def test_the_snakefile_names_its_own_process(monkeypatch):
    monkeypatch.setenv(ENV, "1:1")  # inherited from another process (the login node's snakemake)
    supervisor.export_supervisor()
    pid, started = os.environ[ENV].split(":")
    assert int(pid) == os.getpid() and int(started) == supervisor.start_time(os.getpid())
    assert supervisor.supervisor() == (int(pid), int(started)) and supervisor.alive((int(pid), int(started)))


def test_a_malformed_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(ENV, "snakemake")
    with pytest.raises(SystemExit, match=ENV):
        supervisor.watch()


def test_no_proc_means_no_guard(monkeypatch, tmp_path):
    # macOS, Windows: the Snakefile removes the variable and the job watches nothing
    monkeypatch.setattr(supervisor, "_PROC", tmp_path / "no-proc")
    monkeypatch.setenv(ENV, "1:1")
    supervisor.export_supervisor()
    assert ENV not in os.environ
    monkeypatch.setenv(ENV, "1:1")
    assert supervisor.watch() is None
    supervisor.check()  # returns: nothing is watched
