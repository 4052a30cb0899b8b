"""The workflow benchmark's summary of Snakemake's per-job benchmark files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_workflow", REPO / "bench/workflow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tsv(path: Path, wall: float, cpu: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:01\t1\t1\t1\t1\t0\t0\t50\t{cpu}\n")


def test_families_sum_their_jobs(tmp_path):
    benchmarks = tmp_path / "results/x/benchmarks"
    _tsv(benchmarks / "unlearn/finetune/privacy_loss/top1/run0.tsv", 30.0, 20.0)
    _tsv(benchmarks / "unlearn/sgld/privacy_loss/top1/run1.tsv", 10.5, 9.5)
    _tsv(benchmarks / "train/seed0.tsv", 5.0, 4.0)
    _tsv(benchmarks / "groups.tsv", 1.0, 0.5)
    (benchmarks / "empty.tsv").write_text(HEADER)
    families = _bench().read_benchmarks(benchmarks)
    assert list(families) == ["unlearn", "train", "groups"]  # by wall time
    assert families["unlearn"] == {"jobs": 2, "wall_s": 40.5, "cpu_s": 29.5}
    summary = _bench().summarise(tmp_path / "results/x", wall_s=60.0, startup_s=2.0, run_cpu_s=90.0, cores=2)
    assert summary["jobs"] == 4 and summary["job_wall_s"] == 46.5 and summary["job_cpu_s_sampled"] == 34.0
    assert summary["run_cpu_s"] == 90.0 and summary["core_utilisation"] == 0.75
    assert summary["startup_share_of_job_wall"] == round(4 * 2.0 / 46.5, 3)
    assert summary["machine"]["cores"] >= 1


def test_the_reference_step_is_measured_with_the_default_model():
    seconds = _bench().reference_step_seconds(rounds=1, steps=2)
    assert 0 < seconds < 60
    summary = _bench().summarise(Path("/nonexistent"), wall_s=None, startup_s=1.0, reference_step_s=seconds)
    assert summary["machine"]["reference_step_ms"] == round(seconds * 1e3, 2)


def test_the_run_cpu_counts_every_descendant(tmp_path):
    # a child that burns CPU in a grandchild: the operating system's accounting sees both, where
    # Snakemake's sampled benchmark files can miss the end of a job
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    script = tmp_path / "burn.py"
    script.write_text(burn)
    parent = f"import subprocess, sys\nsubprocess.run([sys.executable, {str(script)!r}], check=True)\n"
    wall, cpu = _bench().timed_run([sys.executable, "-c", parent])
    assert cpu >= 0.4 and wall >= 0.4
