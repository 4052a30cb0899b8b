"""Kill and resume: the tiny workflow cut off four times (a training job mid-training, Snakemake
itself while unlearning jobs run, an unlearning job) and recovered each time as docs/workflow.md
("Interrupted runs") says, ends with tables byte-identical to an uninterrupted run's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, TEST_CONFIG, result_tables, snakemake_command

from perinstance.supervisor import ORPHANED

RESULTS = "results/test"


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def job_processes(cwd: Path, job: str | None = None) -> dict[int, list[str]]:
    """The `python -m perinstance <job>` processes (any job if None) working in `cwd`, by pid: the
    job itself, not the shell Snakemake started it through. Other directories' jobs (other test
    runs on this machine) are not ours."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _argv(int(entry.name))
        if argv[1:3] != ["-m", "perinstance"] or (job is not None and argv[3:4] != [job]):
            continue
        try:
            if Path(os.readlink(entry / "cwd")) == cwd:
                found[int(entry.name)] = argv
        except OSError:
            continue
    return found


def option(argv: list[str], name: str) -> list[str]:
    """The values of option `name` on a command line."""
    start = argv.index(name) + 1
    values = []
    for word in argv[start:]:
        if word.startswith("--"):
            break
        values.append(word)
    return values


class Run:
    """One snakemake invocation in the background, its output in a log file of `cwd`."""

    count = 0

    def __init__(self, cwd: Path, *args: str):
        Run.count += 1
        self.log = cwd / f"snakemake-{Run.count}.log"
        command, env = snakemake_command(*args, cwd=cwd)
        with self.log.open("w") as fh:
            # own process group: teardown kills whatever is left of it, orphans included
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text()[-4000:]

    def wait(self, timeout: float = 600) -> int:
        return self.process.wait(timeout=timeout)

    def until(self, found, what: str, timeout: float = 600, interval: float = 0.01):
        """Poll `found()` until it returns something truthy, while this snakemake runs."""
        deadline = time.monotonic() + timeout
        while True:
            value = found()
            if value:
                return value
            assert self.process.poll() is None, f"snakemake ended before {what}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{self.output()}"
            time.sleep(interval)


def kill_mid_training(run: Run, cwd: Path) -> int:
    """SIGKILL a train job after it saved a resume state and before it published its run; the
    seed it trained. The job is stepped with SIGSTOP / SIGCONT, so that a fast epoch cannot slip
    past the check."""
    for _ in range(2):  # should a job publish between two looks, the next train job
        trains = run.until(lambda: job_processes(cwd, "train"), "a train job", interval=0.05)
        pid, argv = next(iter(trains.items()))
        final = cwd / option(argv, "--training-run")[0]
        partial = final.parent / f".{final.name}.partial"
        running = Path(f"/proc/{pid}")
        started = lambda p=partial, r=running: p.is_dir() or not r.exists()  # noqa: E731
        run.until(started, "a partial run", interval=0.005)
        try:
            os.kill(pid, signal.SIGSTOP)
            while not (partial / "resume.pt").is_file():
                if final.exists() or not running.exists():
                    break
                os.kill(pid, signal.SIGCONT)
                time.sleep(0.01)
                os.kill(pid, signal.SIGSTOP)
            else:
                os.kill(pid, signal.SIGKILL)
                return int(option(argv, "--seed")[0])
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    pytest.fail("no train job could be caught between its resume state and its publication")


def declared_outputs(argv: list[str]) -> list[Path]:
    """The files an unlearn job's command line says it writes."""
    names = ("--curve", "--examples", "--final", "--model", "--barrier-model")
    return [Path(p) for name in names for p in option(argv, name)]


@pytest.fixture
def resume_dir(tmp_path):
    cwd = tmp_path / "resumed"
    cwd.mkdir()
    shutil.copy(REPO / "config.yaml", cwd / "config.yaml")
    yield cwd
    for pid in job_processes(cwd):  # a failed test leaves no job running
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_killed_and_resumed_run_ends_with_the_tables_of_an_uninterrupted_one(resume_dir, tiny_workflow_run):
    cwd = resume_dir
    run_args = ("--cores", "2", "--configfile", str(TEST_CONFIG))

    # 1. a train job killed mid-training: Snakemake fails the job, its partial run stays
    run = Run(cwd, *run_args)
    seed = kill_mid_training(run, cwd)
    assert run.wait() != 0
    assert (cwd / RESULTS / f"train/.seed{seed}.partial/resume.pt").is_file()
    assert not (cwd / RESULTS / f"train/seed{seed}").exists()

    # 2. after a failed job the same command again; it resumes the training. Snakemake itself is
    # killed while unlearning jobs run: they are orphans now, stop by the guard, publish nothing.
    run = Run(cwd, *run_args)
    unlearning = run.until(lambda: job_processes(cwd, "unlearn"), "an unlearn job", interval=0.05)
    run.process.kill()
    run.wait()
    outputs = [cwd / p for argv in unlearning.values() for p in declared_outputs(argv)]
    assert outputs and not any(p.exists() for p in outputs)
    deadline = time.monotonic() + 300
    while job_processes(cwd):
        assert time.monotonic() < deadline, f"orphaned jobs still run: {job_processes(cwd)}"
        time.sleep(0.1)
    assert not any(p.exists() for p in outputs), [str(p) for p in outputs if p.exists()]
    for argv in unlearning.values():
        group = "/".join(option(argv, f"--{w}")[0] for w in ("method", "score", "group"))
        log = (cwd / RESULTS / f"logs/unlearn/{group}.log").read_text()
        assert f"(exit {ORPHANED})" in log and "supervising Snakemake" in log, log[-2000:]
    train_log = (cwd / RESULTS / f"logs/train/seed{seed}.log").read_text()
    assert f"resuming seed {seed} after epoch" in train_log, train_log[-2000:]

    # 3. after a killed Snakemake: unlock, then the same command with --rerun-incomplete (as
    # `make figures`); an unlearn job is killed: the job fails
    command, env = snakemake_command("--unlock", *run_args, cwd=cwd)
    unlock = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    run = Run(cwd, *run_args, "--rerun-incomplete")
    pid = next(iter(run.until(lambda: job_processes(cwd, "unlearn"), "an unlearn job", interval=0.05)))
    os.kill(pid, signal.SIGKILL)
    assert run.wait() != 0

    # 4. the same command again finishes the workflow
    run = Run(cwd, *run_args)
    assert run.wait() == 0, run.output()

    reference = tiny_workflow_run
    assert reference["returncode"] == 0, reference["output"][-3000:]
    resumed = result_tables(cwd)
    assert sorted(resumed) == sorted(reference["tables"])
    differ = [path for path in resumed if resumed[path] != reference["tables"][path]]
    assert not differ, differ
