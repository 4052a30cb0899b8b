"""Dependencies: pyproject.toml against the package's imports, conda environments against both.

conda cannot create environments here, so the environments are checked statically: every env
lists exactly pyproject.toml's runtime dependencies, each pinned to the version installed in the
environment running these tests (CI's), and every third-party module src/perinstance imports is
declared in pyproject.toml (and every declared one imported).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src/perinstance"
ENVS = sorted((REPO / "envs").glob("*.yaml"))
RULE_FILES = sorted((REPO / "workflow/rules").glob("*.smk"))
# `conda:` takes a quoted path or a name bound to one at top level (TORCH_ENV = "../../envs/torch.yaml")
CONDA = re.compile(r"^\s+conda:\s*\n\s*(?:\"([^\"]+)\"|(\w+))\s*$", re.M)
# run the workflow; no rule imports them, so the rules' environments leave them out
NOT_IN_RULE_ENVS = {"snakemake", "snakemake-executor-plugin-slurm"}
# conda-forge package -> PyPI distribution, where the names differ
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib", "seaborn-base": "seaborn"}
# import name -> PyPI distribution, where the names differ (the installed metadata is asked after these)
IMPORT_TO_PYPI = {
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "PIL": "pillow",
    "skimage": "scikit-image",
    "cv2": "opencv-python",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "attr": "attrs",
}


def _normalize(name: str) -> str:
    """PEP 503 name: PyYAML, pyyaml and py_yaml are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(requirement: str) -> tuple[str, str]:
    """'numpy>=1.26' -> ('numpy', '>=1.26'); 'pytorch==2.14.1' -> ('pytorch', '==2.14.1')."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)", requirement)
    assert match, f"cannot read the requirement {requirement!r}"
    return _normalize(match[1]), match[2].strip()


def runtime_dependencies() -> dict[str, str]:
    """pyproject.toml's [project] dependencies, name -> version specifier."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(_split(r) for r in project["dependencies"])


def env_dependencies(path: Path) -> dict[str, tuple[str, str]]:
    """An environment's conda packages (python left out): PyPI distribution -> (conda name, pin)."""
    env = yaml.safe_load(path.read_text())
    packages = {}
    for dependency in env["dependencies"]:
        assert isinstance(dependency, str), f"{path.name}: only conda packages, no pip section: {dependency}"
        name, pin = _split(dependency)
        if name != "python":
            packages[_normalize(CONDA_TO_PYPI.get(name, name))] = (name, pin)
    return packages


def third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in src/perinstance (function-level imports too) -> files."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top != "perinstance":
                    found.setdefault(top, set()).add(path.relative_to(REPO).as_posix())
    return found


@cache
def _installed_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distribution_of(module: str) -> str:
    if module in IMPORT_TO_PYPI:
        return IMPORT_TO_PYPI[module]
    installed = _installed_distributions().get(module, [])
    return _normalize(installed[0]) if len(installed) == 1 else _normalize(module)


def test_envs_exist_and_say_why():
    assert ENVS, "no conda environment under envs/"
    for path in ENVS:
        text = path.read_text()
        assert text.startswith("#"), f"{path.name}: start with a comment saying why this environment exists"
        env = yaml.safe_load(text)
        assert env["channels"][0] == "conda-forge", f"{path.name}: conda-forge must be the first channel"
        assert "nodefaults" in env["channels"], f"{path.name}: add `nodefaults` to the channels"


def test_every_env_lists_exactly_the_runtime_dependencies():
    expected = set(runtime_dependencies()) - NOT_IN_RULE_ENVS
    for path in ENVS:
        listed = set(env_dependencies(path))
        missing, extra = sorted(expected - listed), sorted(listed - expected)
        assert not missing and not extra, (
            f"{path.name} must list exactly pyproject.toml's runtime dependencies "
            f"(less {sorted(NOT_IN_RULE_ENVS)}): missing {missing}, not in pyproject.toml {extra}"
        )


def test_every_env_pin_is_the_installed_version():
    """The envs pin what CI tests with: the versions installed in the environment running this test."""
    problems = []
    for path in ENVS:
        env = yaml.safe_load(path.read_text())
        python = [d for d in env["dependencies"] if _split(d)[0] == "python"]
        running = f"{sys.version_info.major}.{sys.version_info.minor}"
        if python != [f"python={running}"]:
            problems.append(
                f"{path.name}: python is {python or 'not pinned'}, this test runs python {running}: "
                f"pin python={running}"
            )
        for name, (conda_name, pin) in env_dependencies(path).items():
            try:
                installed = metadata.version(name).split("+")[0]  # 2.11.0+cu128 -> 2.11.0
            except metadata.PackageNotFoundError:
                problems.append(
                    f"{path.name}: {name} is not installed in this test environment ({sys.prefix})"
                )
                continue
            if pin != f"=={installed}":
                problems.append(
                    f"{path.name}: {conda_name}{pin or ' (unpinned)'}, but this test environment has "
                    f"{name} {installed}: pin {conda_name}=={installed}"
                )
    assert not problems, "conda envs must pin the versions CI tests with (`pip list`):\n" + "\n".join(
        problems
    )


def test_every_third_party_import_of_the_package_is_declared():
    declared = set(runtime_dependencies())
    undeclared = {
        module: sorted(files)
        for module, files in third_party_imports().items()
        if distribution_of(module) not in declared
    }
    assert not undeclared, (
        "src/perinstance imports modules whose distributions pyproject.toml [project] dependencies lack: "
        f"{undeclared} (import name -> distribution: IMPORT_TO_PYPI in {Path(__file__).name})"
    )


def test_every_runtime_dependency_is_imported_by_the_package():
    imported = {distribution_of(module) for module in third_party_imports()}
    unused = sorted(set(runtime_dependencies()) - NOT_IN_RULE_ENVS - imported)
    assert not unused, (
        f"pyproject.toml declares {unused} but src/perinstance never imports them: "
        "drop them or move them to an extra"
    )


def _env_names() -> dict[str, str]:
    names = {}
    for path in [REPO / "Snakefile", *RULE_FILES]:
        names.update(re.findall(r"^(\w+)\s*=\s*\"([^\"]+\.ya?ml)\"", path.read_text(), flags=re.M))
    return names


def rule_envs() -> dict[tuple[str, str], Path | None]:
    """(rule file, rule) -> its conda env (a path is relative to the rule's file, as in Snakemake) or None."""
    names, envs = _env_names(), {}
    for smk in RULE_FILES:
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            header = re.match(r"rule (\w+):", block)
            if not header:
                continue
            match = CONDA.search(block)
            path = match and (match[1] or names.get(match[2]))
            envs[smk.name, header[1]] = (smk.parent / path).resolve() if path else None
    return envs


def test_every_rule_has_log_benchmark_conda_and_resources():
    envs = rule_envs()
    for smk in RULE_FILES:
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            header = re.match(r"rule (\w+):", block)
            if not header:
                continue
            for directive in ("log:", "benchmark:", "conda:", "resources:"):
                assert re.search(rf"^\s+{directive}", block, flags=re.M), (
                    f"{smk.name}: rule {header[1]} has no {directive}"
                )
            env = envs[smk.name, header[1]]
            assert env is not None and env.is_file(), f"{smk.name}: rule {header[1]}: conda env {env} missing"


def test_every_env_is_used_by_a_rule():
    used = set(rule_envs().values())
    unused = [path.name for path in ENVS if path.resolve() not in used]
    assert not unused, f"no rule uses {unused}: remove them (one environment per real difference)"
