"""Workflow benchmark: run an experiment from a clean results directory and write where the time went.

    python bench/workflow.py                              # default experiment, 2 cores
    python bench/workflow.py --configfile workflow/configs/test.yaml --cores 2
    python bench/workflow.py --summarise results/default  # only summarise an existing run's benchmarks

The run happens in a scratch directory (`--directory`), so the checkout's own results are never
touched. The result file (JSON) holds the total wall time, the exact CPU seconds of every process
the run started (`run_cpu_s`, from the operating system's accounting of the Snakemake process and
its waited-for descendants) and the core utilisation it implies, and per rule family (the job name:
the first folder under results/<exp>/benchmarks/) the job count and the wall and CPU seconds that
Snakemake's per-job benchmark files recorded (their CPU seconds are sampled: Snakemake polls a job
every 0.5 s for 15 s, then every 30 s, and keeps the last sample, so a family's `cpu_s` is a lower
bound, short by up to 30 s per job; `wall_s` is exact), the start-up share (each job pays a fresh Python and
the package's imports before any work), and the machine: cores, CPU model, load, torch version,
and `reference_step_ms`, one plain training step of the default model measured just before the
run: hosts of one machine kind differ in speed (an AMD EPYC and an Intel Xeon host of the 2-core
kind differ 3x per step), and wall times compare only next to it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def read_benchmarks(benchmarks: Path) -> dict[str, dict[str, float]]:
    """rule family -> jobs, wall_s, cpu_s, summed over the family's benchmark files."""
    families: dict[str, dict[str, float]] = {}
    for path in sorted(benchmarks.rglob("*.tsv")):
        family = path.relative_to(benchmarks).parts[0]
        family = family[: -len(".tsv")] if family.endswith(".tsv") else family
        with open(path) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if not rows:
            continue
        entry = families.setdefault(family, {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0})
        entry["jobs"] += 1
        entry["wall_s"] += float(rows[-1]["s"])
        entry["cpu_s"] += (
            float(rows[-1]["cpu_time"]) if rows[-1].get("cpu_time") not in (None, "", "NA") else 0.0
        )
    return dict(sorted(families.items(), key=lambda item: -item[1]["wall_s"]))


def startup_seconds(repeats: int = 5) -> float:
    """Median wall time of what every job pays before working: Python, the CLI and torch."""
    command = [sys.executable, "-c", "import perinstance.cli, torch"]
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference_step_seconds(rounds: int = 5, steps: int = 20) -> float:
    """Median seconds of one plain training step of the default model (SmallCNN, batch 64, one
    thread): the machine's speed, so that runs on different hosts of one machine kind compare."""
    code = (
        "import statistics, sys, time, torch, torch.nn.functional as F\n"
        "from perinstance.models import build_model\n"
        "from perinstance.optim import SGD\n"
        "torch.set_num_threads(1); torch.manual_seed(0)\n"
        "m = build_model('smallcnn', num_classes=10, input_shape=(1, 28, 28), width=16, norm_groups=4)\n"
        "o = SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-3)\n"
        "x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))\n"
        "def step():\n"
        "    o.zero_grad(); F.cross_entropy(m(x), y).backward(); o.step()\n"
        "times = []\n"
        f"for r in range({rounds} + 1):\n"
        "    t = time.perf_counter()\n"
        f"    for _ in range({steps}): step()\n"
        f"    times.append((time.perf_counter() - t) / {steps})\n"
        "print(statistics.median(times[1:]))\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
    return float(out.stdout.strip())


def machine() -> dict[str, object]:
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        model = names[0] if names else model
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "torch": torch_version,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def summarise(
    results_dir: Path,
    *,
    wall_s: float | None,
    startup_s: float,
    reference_step_s: float | None = None,
    run_cpu_s: float | None = None,
    cores: int | None = None,
) -> dict[str, object]:
    families = read_benchmarks(results_dir / "benchmarks")
    jobs = sum(int(f["jobs"]) for f in families.values())
    job_wall = sum(f["wall_s"] for f in families.values())
    busy = run_cpu_s / (wall_s * cores) if run_cpu_s is not None and wall_s and cores else None
    return {
        "results": str(results_dir),
        "wall_s": wall_s,
        "run_cpu_s": round(run_cpu_s, 1) if run_cpu_s is not None else None,
        "core_utilisation": round(busy, 3) if busy is not None else None,
        "jobs": jobs,
        "job_wall_s": round(job_wall, 1),
        "job_cpu_s_sampled": round(sum(f["cpu_s"] for f in families.values()), 1),
        "startup_s_per_job": round(startup_s, 3),
        "startup_share_of_job_wall": round(jobs * startup_s / job_wall, 3) if job_wall else None,
        "families": {
            name: {k: round(v, 1) if isinstance(v, float) else v for k, v in f.items()}
            for name, f in families.items()
        },
        "machine": dict(
            machine(),
            reference_step_ms=round(reference_step_s * 1e3, 2) if reference_step_s is not None else None,
        ),
    }


def run_workflow(configfile: Path, cores: int, keep: Path | None) -> tuple[float, float, Path]:
    """Run the workflow from an empty scratch directory.

    Returns (wall seconds, CPU seconds of Snakemake and every job it waited for, its results dir).
    """
    import yaml

    scratch = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="perinstance-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    experiment = yaml.safe_load(configfile.read_text())["experiment"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(scratch),
        "--cores",
        str(cores),
        "--configfile",
        str(configfile.resolve()),
        "--quiet",
        "rules",
    ]
    wall, cpu = timed_run(command, env=env, cwd=scratch)
    return wall, cpu, scratch / "results" / experiment


def timed_run(command: list[str], **kwargs) -> tuple[float, float]:
    """Run a command; (wall seconds, CPU seconds of it and every descendant it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, **kwargs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configfile", type=Path, default=REPO / "config.yaml")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--summarise", type=Path, default=None, help="results/<exp> of a finished run; no run"
    )
    parser.add_argument("--keep", type=Path, default=None, help="scratch directory to run in and keep")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON (default: bench/results/workflow-<exp>-<cores>cores.json)",
    )
    args = parser.parse_args(argv)
    reference = reference_step_seconds()  # before the run, on the machine as the run finds it
    if args.summarise:
        wall, cpu, results = None, None, args.summarise
    else:
        wall, cpu, results = run_workflow(args.configfile, args.cores, args.keep)
    summary = summarise(
        results,
        wall_s=round(wall, 1) if wall is not None else None,
        startup_s=startup_seconds(),
        reference_step_s=reference,
        run_cpu_s=cpu,
        cores=args.cores,
    )
    summary["configfile"] = str(args.configfile)
    summary["cores"] = args.cores
    out = args.out or REPO / "bench" / "results" / f"workflow-{results.name}-{args.cores}cores.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("wall_s", "run_cpu_s", "core_utilisation", "jobs", "startup_share_of_job_wall")
            }
        ),
        file=sys.stderr,
    )
    print(f"wrote {out}", file=sys.stderr)
    if not args.summarise and not args.keep:
        shutil.rmtree(results.parents[1], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
