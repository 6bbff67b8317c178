"""A real SLURM: dask workers as SLURM jobs, a lost job, GPU generic resources.

Needs the single-node SLURM of ``.ci/slurm/start.sh`` (root, loopback, 8 CPUs,
2 fake GPUs); ``make test-slurm`` starts it, runs ``pytest -m slurm`` and stops
it. Without it every test here is skipped with the reason (tests/conftest.py),
or fails when CUBIE_REQUIRE_SLURM is set, as make test-slurm does.

The profiles are the shipped ones, with overrides for this machine: loopback
interface, one core and 1 GiB per job, a short walltime, ``--chdir`` to the
test's own folder (where the jobs' output lands), and ``tests/`` on the jobs'
PYTHONPATH so workers can import this module's task functions.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from distributed import Client, wait

from cubie_dist.cluster import from_config, job_script

pytestmark = pytest.mark.slurm

TESTS = Path(__file__).resolve().parents[1]
CONFIGS = TESTS.parent / "cluster_configs"
TIMEOUT_S = 60


@pytest.fixture
def job_dir(request) -> Path:
    """The jobs' --chdir and log folder: under the SLURM scratch dir, not pytest's
    tmp_path, which a concurrent pytest session may prune while the jobs run."""
    root = Path(os.environ.get("CUBIE_SLURM_DIR", "/tmp/cubie-slurm")) / "jobs"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=root))


def this_machine(folder: Path, **more) -> dict:
    """Overrides that fit the profiles onto the local single-node SLURM."""
    return {
        "cluster.interface": "lo",
        "cluster.cores": 1,
        "cluster.memory": "1GiB",
        "cluster.walltime": "00:10:00",
        "cluster.job_extra_directives": [f"--chdir={folder}"],
        "cluster.log_directory": str(folder / "logs"),
        "cluster.death_timeout": 30,
        "cluster.scheduler_options": {"dashboard_address": ":0"},
        # tasks are this module's functions, pickled by reference (dist.test_slurm)
        "cluster.job_script_prologue": [f"export PYTHONPATH={TESTS}"],
        **more,
    }


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def wait_until(predicate, timeout=TIMEOUT_S, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def slurm_job_id():
    return os.environ.get("SLURM_JOB_ID")


def square(x):
    return x * x


def slow_square(x):
    time.sleep(0.1)
    return x * x


def test_slurm_cpu_workers_are_slurm_jobs(job_dir):
    overrides = this_machine(job_dir, **{"scale.jobs": 2})
    with from_config(CONFIGS / "slurm-cpu.yaml", **overrides) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=TIMEOUT_S)
        job_ids = {job.job_id for job in cluster.workers.values()}
        assert len(job_ids) == 2 and None not in job_ids
        assert job_ids <= squeue_ids()
        # each worker runs inside its own job
        assert set(client.run(slurm_job_id).values()) == job_ids
        futures = client.map(square, range(100))
        wait(futures, timeout=TIMEOUT_S)
        assert client.gather(futures) == [i * i for i in range(100)]
    wait_until(lambda: not job_ids & squeue_ids(), what="jobs to leave the queue after close")


def test_cancelled_job_tasks_rerun_on_the_other_worker(job_dir):
    overrides = this_machine(job_dir, **{"scale.jobs": 2})
    n = 30
    with from_config(CONFIGS / "slurm-cpu.yaml", **overrides) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=TIMEOUT_S)
        job_of = client.run(slurm_job_id)  # worker address -> SLURM job id
        futures = client.map(slow_square, range(n))
        wait_until(lambda: sum(f.done() for f in futures) >= 4, what="the first results")

        busy = {addr: keys for addr, keys in client.processing().items() if keys}
        assert len(busy) == 2, f"both workers should hold tasks: {busy}"
        victim, survivor = sorted(busy)
        assert not all(f.done() for f in futures)
        subprocess.run(["scancel", job_of[victim]], check=True)

        wait(futures, timeout=TIMEOUT_S)
        assert client.gather(futures) == [i * i for i in range(n)]
        wait_until(lambda: victim not in client.scheduler_info()["workers"], what="the victim to leave")
        assert list(client.scheduler_info()["workers"]) == [survivor]
        # every result, the victim's included, now lives on (was re-run by) the survivor
        assert all(list(holders) == [survivor] for holders in client.who_has(futures).values())
        assert job_of[victim] not in squeue_ids()
        # fixed scale: the cancelled job is not replaced
        assert len(cluster.workers) <= 2 and job_of[survivor] in squeue_ids()


def test_gpu_job_sees_its_gpu(job_dir):
    one = subprocess.run(
        ["srun", "-t", "1", "--gres=gpu:1", "printenv", "CUDA_VISIBLE_DEVICES"],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=job_dir, check=True,
    )
    assert one.stdout.strip() in {"0", "1"}
    two = subprocess.run(
        ["srun", "-t", "1", "--gres=gpu:2", "printenv", "CUDA_VISIBLE_DEVICES"],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=job_dir, check=True,
    )
    assert two.stdout.strip() == "0,1"
    # the node has two: three cannot be had
    three = subprocess.run(
        ["sbatch", "--test-only", "-t", "1", "--gres=gpu:3", "--wrap", "true"],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=job_dir,
    )
    assert three.returncode != 0


def test_slurm_gpu_job_script_is_accepted_by_sbatch(job_dir):
    """The GPU profile's directives are valid for a real SLURM (nothing is run)."""
    script = job_script(CONFIGS / "slurm-gpu.yaml", **this_machine(job_dir, **{
        "cluster.job_extra_directives": ["--gres=gpu:2", f"--chdir={job_dir}"],
        "cluster.cores": 2,  # one per GPU worker
    }))
    assert "#SBATCH --gres=gpu:2" in script and "--resources GPU=1" in script
    assert "-m dask_cuda.cli" in script
    path = job_dir / "gpu-job.sh"
    path.write_text(script)
    result = subprocess.run(
        ["sbatch", "--test-only", str(path)], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr
    assert "to start at" in result.stderr


def test_temporary_tls_reaches_workers_in_jobs(job_dir):
    pytest.importorskip("cryptography", reason="security.temporary needs 'cryptography'")
    overrides = this_machine(job_dir, **{
        "scale.jobs": 1,
        "security.temporary": True,
        "cluster.shared_temp_directory": str(job_dir),  # where the jobs read the certificates
    })
    with from_config(CONFIGS / "slurm-cpu.yaml", **overrides) as cluster, Client(cluster) as client:
        assert cluster.scheduler_address.startswith("tls://")
        client.wait_for_workers(1, timeout=TIMEOUT_S)
        assert all(a.startswith("tls://") for a in client.scheduler_info()["workers"])
        assert client.submit(square, 12).result(timeout=TIMEOUT_S) == 144


# --------------------------------------------------------------- sweeps on SLURM
import sys  # noqa: E402
import threading  # noqa: E402

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
import yaml  # noqa: E402

import cubie_dist as cd  # noqa: E402
from cubie_dist.cluster import load_config  # noqa: E402
from cubie_kernel import Solver  # noqa: E402
from cubie_kernel.systems import lorenz  # noqa: E402

SWEEP_SETTINGS = {"method": "rk4", "dt": 1e-3, "save_every": None}


def direct_lorenz(rho, sigma, duration):
    """The same runs solved in this process: the reference, value for value."""
    solver = Solver(lorenz(), target="cpu", **SWEEP_SETTINGS)
    return solver.solve(parameters={"rho": rho, "sigma": sigma}, duration=duration, grid="verbatim")


def test_cli_run_on_slurm_equals_the_direct_solve(job_dir):
    """`cubie-dist run SWEEP.yaml --cluster <slurm config>`: workers are SLURM jobs."""
    cluster_file = job_dir / "slurm.yaml"
    config = load_config(CONFIGS / "slurm-cpu.yaml", **this_machine(job_dir, **{"scale.jobs": 2}))
    cluster_file.write_text(yaml.safe_dump(config.to_dict()))
    sweep_file = job_dir / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "system": {"example": "lorenz"},
        "solver": SWEEP_SETTINGS,
        "sweep": {"kind": "grid", "axes": {"rho": {"linspace": [0.0, 30.0, 60]}, "sigma": [8.0, 12.0]}},
        "duration": 0.5,
    }))
    output = job_dir / "out.zarr"
    done = subprocess.run(
        [sys.executable, "-m", "cubie_dist.cli", "run", str(sweep_file), "--cluster",
         str(cluster_file), "--output", str(output), "--no-progress"],
        capture_output=True, text=True, timeout=600, cwd=job_dir,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {output}" in done.stdout
    ds = xr.open_zarr(output)
    assert dict(ds.sizes) == {"rho": 60, "sigma": 2, "time": 1}
    rho, sigma = np.meshgrid(np.linspace(0.0, 30.0, 60), [8.0, 12.0], indexing="ij")
    reference = direct_lorenz(rho.ravel(), sigma.ravel(), 0.5)
    for name in ("x", "y", "z"):
        np.testing.assert_array_equal(ds[name].values.reshape(120, 1), reference[name].values)


@pytest.mark.parametrize("to_store", [False, True], ids=["memory", "store"])
def test_sweep_survives_a_cancelled_worker_job(job_dir, to_store):
    """scancel one worker's job mid-sweep: its chunks re-run, the result is complete.

    With a store, the workers write their own regions: the cancelled job's
    chunk (partly written or not) is rewritten whole by the survivor."""
    rho = np.linspace(0.0, 30.0, 4000)
    sigma = np.full_like(rho, 10.0)
    spec = cd.SolverSpec(lorenz(), **SWEEP_SETTINGS)
    sweep = cd.Sweep.zip(rho=rho, sigma=sigma)
    duration = 20.0  # 20,000 steps: ~0.2 s per chunk of 100 runs on one core
    overrides = this_machine(job_dir, **{"scale.jobs": 2})
    with from_config(CONFIGS / "slurm-cpu.yaml", **overrides) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=TIMEOUT_S)
        job_of = client.run(slurm_job_id)
        result = {}

        def run():
            result["ds"] = cd.run_sweep(
                spec, sweep, duration, client=client, progress=False, max_chunk_runs=100,
                store=job_dir / "out.zarr" if to_store else None,
            )

        thread = threading.Thread(target=run)
        thread.start()
        # both workers compiled and busy: the sweep is under way on both
        wait_until(
            lambda: all(cd.worker_compile_counts(client).get(a, 0) == 1 for a in job_of)
            and sum(1 for keys in client.processing().values() if keys) == 2,
            timeout=300, what="both workers to run chunks",
        )
        victim = sorted(job_of)[0]
        subprocess.run(["scancel", job_of[victim]], check=True)
        thread.join(timeout=600)
        assert not thread.is_alive(), "the sweep did not finish after a worker was lost"
        wait_until(lambda: victim not in client.scheduler_info()["workers"], what="the victim to leave")
    ds = result["ds"]
    if to_store:
        ds = xr.open_zarr(job_dir / "out.zarr")
        assert len(list((job_dir / "out.zarr" / "cubie_chunks").glob("*.json"))) == 40
    reference = direct_lorenz(rho, sigma, duration)
    assert ds.sizes["run"] == rho.size
    for name in ("x", "y", "z"):
        np.testing.assert_array_equal(ds[name].values, reference[name].values)
    np.testing.assert_array_equal(ds["status"].values, 0)
