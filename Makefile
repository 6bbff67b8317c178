# cubie-dist: local virtualenv, demo, tests, benchmarks.
#
#   make demo    set up .venv (first time only) and run the main job: a Lorenz sweep
#   make test    main suite, then the CUDA-simulator suite in its own process
#   make test-slurm  start a local SLURM (root), run the slurm-marked tests, stop it
#   make bench   every benchmarks/*.py script, one after another
#   make gpu-wheels  (networked machine) the wheels a bare GPU machine lacks, into gpu-wheels/
#   make gpu-check   (GPU machine, offline) install those wheels, run benchmarks/gpu_check.py
#   make clean   caches and build leftovers (keeps .venv); distclean drops .venv too
#
# PYTEST_ARGS is passed to both pytest runs, e.g. make test PYTEST_ARGS="-x -k lorenz".
# PYTEST_WORKERS: processes for the main and simulator suites (pytest-xdist;
# "auto": one per core, 0: each suite in one process), e.g. make test PYTEST_WORKERS=0.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
PYTEST_WORKERS ?= auto
# LLVM optimisation level for the main suite's cpu-target kernels (NUMBA_OPT;
# numba's default is 3). See test-main.
TEST_NUMBA_OPT ?= 1

# Helper modules in benchmarks/ start with an underscore and are not run;
# gpu_check.py is the whole GPU check (pytest included): make gpu-check runs it.
BENCHMARKS := $(sort $(filter-out benchmarks/_% benchmarks/gpu_check.py,$(wildcard benchmarks/*.py)))

# ---- the GPU check (issue 9) ------------------------------------------------
# The GPU machine (Python 3.12, x86_64 manylinux, no network) has numpy, numba,
# numba-cuda, xarray, scipy, pyyaml, psutil, jinja2, click, cloudpickle, toolz,
# fsspec, msgpack, sortedcontainers, packaging, typing-extensions, pandas,
# pillow, contourpy, narwhals, cuda-core, nvidia-ml-py, jax, diffrax, torch,
# torchdiffeq, pytest and attrs, but not dask and friends. These pins are
# exactly what it lacks: dask, distributed, dask-cuda, dask-jobqueue, zarr and
# their dependencies not in its image (read from the wheels' Requires-Dist;
# bokeh and xyzservices only for rapids-dask-dependency's dashboard pin),
# at the versions this repo is tested with (dask-cuda 26.10 needs dask and
# distributed 2026.7.1).
GPU_WHEELS ?= gpu-wheels
GPU_WHEEL_PINS := \
	dask==2026.7.1 distributed==2026.7.1 dask-cuda==26.10.0 dask-jobqueue==0.9.0 zarr==3.1.6 \
	rapids-dask-dependency==26.10.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2 tornado==6.6.1 \
	zict==3.0.0 donfig==0.8.1.post1 google-crc32c==1.9.0 numcodecs==0.16.6 bokeh==3.9.2 \
	xyzservices==2026.9.1
GPU_PYTHON_VERSION ?= 3.12
# On the GPU machine plain python3 is the interpreter with torch and jax; no
# venv is ever created there. Missing wheels go into GPU_SITE (on PYTHONPATH
# for the check), so the image's own site-packages are never modified.
GPU_PYTHON ?= python3
GPU_SITE ?= .gpu-site
GPU_CHECK_ARGS ?=

# Prints the pins (arguments) whose distribution is not installed.
define GPU_MISSING_PY
import sys
from importlib import metadata
missing = []
for pin in sys.argv[1:]:
    try:
        metadata.version(pin.split("==")[0])
    except metadata.PackageNotFoundError:
        missing.append(pin)
print(" ".join(missing))
endef
export GPU_MISSING_PY

.PHONY: venv demo test test-main test-cudasim test-slurm bench gpu-wheels gpu-check clean distclean

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
#
# Both suites' time is numba compiling kernels (and, for the simulator suite,
# running them in Python), one CPU core each, so they run on PYTEST_WORKERS
# processes. --dist loadfile keeps every test file on
# one worker, in order: a module-scoped fixture's kernel is compiled once, and
# tests that build on an earlier one in their file (the README's run, then its
# show) still find it. The workers share the session's kernel cache folder
# (tests/conftest.py sets CUBIE_CACHE_DIR before they start), so a kernel one
# worker compiled is loaded, not compiled, by the other.
test: venv
	@$(MAKE) --no-print-directory test-main
	@$(MAKE) --no-print-directory test-cudasim

# The main suite compiles its cpu-target kernels at LLVM -O1 (TEST_NUMBA_OPT):
# without fast-math the results are the same bits at any level, and -O1 compiles
# the large implicit kernels about 3x faster (HIRES with Rodas5P: 22 s vs 80 s)
# the same run time. NVVM still optimises the PTX (numba-cuda turns any
# nonzero NUMBA_OPT into -opt=3). The simulator suite keeps numba's default -O3
# and checks those cpu kernels bit for bit against the simulator.
test-main: venv
	@echo '== NUMBA_OPT=$(TEST_NUMBA_OPT) pytest -m "not cudasim and not slurm" (cpu target, PTX compile)'
	@NUMBA_OPT=$(TEST_NUMBA_OPT) $(VPY) -m pytest -m "not cudasim and not slurm" -q -rs -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'make test: no tests collected for -m "not cudasim and not slurm" (pytest exit 5)' >&2; fi; \
	exit $$rc

# NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported, hence
# a process of its own.
test-cudasim: venv
	@echo '== NUMBA_ENABLE_CUDASIM=1 pytest -m cudasim (CUDA simulator)'
	@NUMBA_ENABLE_CUDASIM=1 $(VPY) -m pytest -m cudasim -q -rs -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
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

# On a networked machine (any OS/Python: pip downloads for the GPU machine's
# Python and platform). Carry the folder to the GPU machine with the checkout.
gpu-wheels:
	rm -rf $(GPU_WHEELS)
	$(PYTHON) -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
		--python-version $(GPU_PYTHON_VERSION) --implementation cp \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux_2_28_x86_64 -d $(GPU_WHEELS) $(GPU_WHEEL_PINS)
	@n=$$(ls $(GPU_WHEELS)/*.whl | wc -l); want=$(words $(GPU_WHEEL_PINS)); \
	if [ $$n -ne $$want ]; then echo "make gpu-wheels: $$n wheels for $$want pins" >&2; exit 1; fi; \
	echo "make gpu-wheels: $$n wheels, $$(du -sh $(GPU_WHEELS) | cut -f1) in $(GPU_WHEELS)/"

# On the GPU machine, offline: install (--no-index: never the network) only the
# pinned distributions that are missing, then run the check. Results: $OUT/
# gpu-check.txt (+ .json) when OUT is set, else gpu-check-results/.
gpu-check:
	@export PYTHONPATH="$(abspath $(GPU_SITE))$${PYTHONPATH:+:$$PYTHONPATH}"; \
	missing=$$($(GPU_PYTHON) -c "$$GPU_MISSING_PY" $(GPU_WHEEL_PINS)) || exit 1; \
	if [ -n "$$missing" ]; then \
		if [ ! -d "$(GPU_WHEELS)" ]; then \
			echo "make gpu-check: missing $$missing and no $(GPU_WHEELS)/ folder: run make gpu-wheels on a networked machine and carry it" >&2; \
			exit 1; \
		fi; \
		echo "== installing from $(GPU_WHEELS)/ into $(GPU_SITE)/: $$missing"; \
		$(GPU_PYTHON) -m pip install -q --disable-pip-version-check --no-index --no-deps \
			--no-compile --find-links $(GPU_WHEELS) --target $(GPU_SITE) $$missing || exit 1; \
	else \
		echo "== every pinned package is installed: nothing to install"; \
	fi; \
	export PYTHONPATH="$(CURDIR):$$PYTHONPATH"; \
	$(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf .pytest_cache build dist *.egg-info dask-worker-space

distclean: clean
	rm -rf $(VENV) $(GPU_WHEELS) $(GPU_SITE) gpu-check-results
