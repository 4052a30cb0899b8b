"""The test suite's xdist grouping holds with the installed pytest and pytest-xdist.

`make test` relies on `--dist loadgroup` to build the tiny workflow run once; some pytest releases
drop the group suffix pytest-xdist puts on node ids, and then every worker builds it again.
"""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("xdist")

CONFTEST = """
import os
import pytest

@pytest.fixture(scope="session")
def shared():
    return os.environ["PYTEST_XDIST_WORKER"]

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("shared"))
"""

TESTS = """
import pytest

@pytest.mark.parametrize("i", range(6))
def test_reports_its_worker(shared, i):
    print("WORKER", shared)
"""


def test_tests_sharing_a_fixture_run_on_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_grouped.py").write_text(textwrap.dedent(TESTS))
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts =\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "3",
            "--dist",
            "loadgroup",
            "-rA",
            "-s",
            "-p",
            "no:cacheprovider",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    passed = [line for line in result.stdout.splitlines() if line.startswith("PASSED")]
    assert len(passed) == 6 and all("@shared" in line for line in passed), result.stdout[-2000:]
