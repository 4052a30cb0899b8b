# Two entry points for a fresh machine (Python >= 3.11 with venv):
#   make figures   install into .venv and run the default experiment (config.yaml) -> figures/default/
#   make test      install into .venv and run the test suite
# and for changes: `make lint` (what CI checks before the tests), `make format` (applies the fixes)
VENV ?= .venv
CORES ?= 2
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
# what `make lint` checks and `make format` rewrites (ruff and snakefmt settings: pyproject.toml)
# (examples/ where present; docs/api holds the MkDocs hooks of the documentation site)
PY_SOURCES := src tests bench workflow/scripts docs/api $(wildcard examples)
SMK_SOURCES := Snakefile workflow/rules
# rules call `python -m perinstance`; the venv's bin first on PATH makes that this venv's python
RUN := PATH="$(BIN):$$PATH"

.PHONY: install figures test test-slurm report docs lint format dry-run clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# the local profile (rerun-incomplete among others): after an interrupt (Ctrl-C, a killed job)
# `make figures` again redoes the jobs that were cut off instead of stopping at Snakemake's
# IncompleteFilesException
LOCAL_PROFILE := --profile workflow/profiles/default
figures: install
	$(RUN) snakemake $(LOCAL_PROFILE) --cores $(CORES)

report: figures
	$(RUN) snakemake $(LOCAL_PROFILE) --cores $(CORES) --report report.html

# three pytest workers (pytest-xdist), also on two cores: the SLURM and other end-to-end tests
# spend much of their time waiting on Snakemake's status checks and job start-ups, which the other
# workers fill; tests that share one workflow run stay on one worker (tests/conftest.py).
# TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
test: install
	$(RUN) python -m pytest -n $(TEST_WORKERS) --dist loadgroup

test-slurm: install
	$(RUN) PERINSTANCE_TEST_SLURM=1 python -m pytest -m slurm

# the documentation site with the API reference (mkdocs.yml) -> site/; --strict: a broken link or
# docstring fails the build
docs: install
	$(RUN) mkdocs build --strict --site-dir site

lint: install
	$(RUN) ruff format --check $(PY_SOURCES)
	$(RUN) ruff check $(PY_SOURCES)
	$(RUN) snakefmt --check $(SMK_SOURCES)
	$(RUN) snakemake --lint

# safe fixes first (imports, pyupgrade), then the formatters; what is left (long strings and
# comments, names) `make lint` lists and is fixed by hand
format: install
	$(RUN) ruff check --fix --exit-zero $(PY_SOURCES)
	$(RUN) ruff format $(PY_SOURCES)
	$(RUN) snakefmt $(SMK_SOURCES)

dry-run: install
	$(RUN) snakemake -n

clean:
	rm -rf results .snakemake report.html site
