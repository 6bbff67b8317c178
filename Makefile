# cubie-dist: local virtualenv, demo, tests, benchmarks.
#
#   make demo    set up .venv (first time only) and run the main job: a Lorenz sweep
#   make test    main suite, then the CUDA-simulator suite in its own process
#   make test-slurm  start a local SLURM (root), run the slurm-marked tests, stop it
#   make bench   every benchmarks/*.py script, one after another
#   make clean   caches and build leftovers (keeps .venv); distclean drops .venv too
#
# PYTEST_ARGS is passed to both pytest runs, e.g. make test PYTEST_ARGS="-x -k lorenz".

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# Helper modules in benchmarks/ start with an underscore and are not run.
BENCHMARKS := $(sort $(filter-out benchmarks/_%,$(wildcard benchmarks/*.py)))

.PHONY: venv demo test test-main test-cudasim test-slurm bench clean distclean

venv: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Re-installs only when pyproject.toml changes (the install is editable). -qq:
# pip prints errors only (the machine-wide pip config adds dozens of harmless
# "Location ... is ignored" warnings).
$(STAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install -qq --progress-bar off --disable-pip-version-check -e ".[test]"
	touch $@

# The main job: a 10,000-run Lorenz sweep on the embedded local cluster (dask-cuda
# workers on GPUs, else one cpu worker per core); the workers write it into the Zarr
# store examples/lorenz_grid.zarr (--overwrite: every demo computes afresh instead of
# resuming the store of the last one).
demo: venv
	$(VENV)/bin/cubie-dist run examples/lorenz_grid.yaml --overwrite

# Exit code 5 (no tests collected) is a failure for both runs: make stops on
# any non-zero exit, and the message says why.
test: venv
	@$(MAKE) --no-print-directory test-main
	@$(MAKE) --no-print-directory test-cudasim

test-main: venv
	@echo '== pytest -m "not cudasim and not slurm" (cpu target, PTX compile)'
	@$(VPY) -m pytest -m "not cudasim and not slurm" -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: no tests collected for -m "not cudasim and not slurm" (pytest exit 5)' >&2; fi; \
	exit $$rc

# NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported, hence
# a process of its own.
test-cudasim: venv
	@echo '== NUMBA_ENABLE_CUDASIM=1 pytest -m cudasim (CUDA simulator)'
	@NUMBA_ENABLE_CUDASIM=1 $(VPY) -m pytest -m cudasim -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: no tests collected for -m cudasim (pytest exit 5)' >&2; fi; \
	exit $$rc

# A real single-node SLURM on loopback (needs root; installs it on first use):
# .ci/slurm/start.sh, then pytest -m slurm, then ALWAYS .ci/slurm/stop.sh. The
# exit code is start.sh's if it failed, else pytest's. CUBIE_REQUIRE_SLURM turns
# "SLURM not running" skips into failures (tests/conftest.py). tests/dist is named
# explicitly: "dist" is in pytest's default norecursedirs.
test-slurm: venv
	@rc=0; .ci/slurm/start.sh || rc=$$?; \
	if [ $$rc -eq 0 ]; then \
		echo '== pytest -m slurm (local SLURM)'; \
		CUBIE_REQUIRE_SLURM=1 $(VPY) -m pytest -m slurm -q -rs tests/dist $(PYTEST_ARGS) || rc=$$?; \
		if [ $$rc -eq 5 ]; then echo 'make test-slurm: no tests collected for -m slurm (pytest exit 5)' >&2; fi; \
	fi; \
	.ci/slurm/stop.sh || { [ $$rc -ne 0 ] || rc=1; }; \
	exit $$rc

bench: venv
	@if [ -z "$(BENCHMARKS)" ]; then echo 'make bench: no scripts in benchmarks/' >&2; exit 1; fi
	@set -e; for script in $(BENCHMARKS); do \
		echo "== $$script"; \
		$(VPY) $$script; \
	done

clean:
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf .pytest_cache build dist *.egg-info dask-worker-space

distclean: clean
	rm -rf $(VENV)
