"""Cluster profiles (cluster_configs/*.yaml) and cubie_dist.cluster, without SLURM.

Job scripts are checked as text, as dask-jobqueue's own test_job_script does;
the only clusters started are a one-worker LocalCluster and in-process
(threaded) ones for TLS.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import dask.config
import pytest
import yaml
from distributed import Client

from cubie_dist import cluster as cluster_mod
from cubie_dist.cluster import (
    NO_GPU_MESSAGE,
    ClusterConfigError,
    NoGPUError,
    from_config,
    job_script,
    load_config,
)
from cubie_dist.config import DEFAULTS_FILE, KINDS, SCHEMA, gpus_per_job

CONFIGS = Path(__file__).resolve().parents[2] / "cluster_configs"
PROFILES = sorted(CONFIGS.glob("*.yaml"))
SLURM_CPU = CONFIGS / "slurm-cpu.yaml"
SLURM_GPU = CONFIGS / "slurm-gpu.yaml"
LOCAL = CONFIGS / "local.yaml"

requires_cryptography = pytest.mark.skipif(
    importlib.util.find_spec("cryptography") is None,
    reason="Security.temporary() needs the 'cryptography' package",
)


def square(x):
    return x * x


# --- profiles and defaults -----------------------------------------------------------


def test_the_four_profiles_exist():
    assert {p.name for p in PROFILES} >= {
        "local.yaml", "local-cuda.yaml", "slurm-cpu.yaml", "slurm-gpu.yaml"
    }


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_loads_and_lists_every_key_with_a_comment(path):
    config = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert raw["kind"] == config.kind in KINDS
    text = path.read_text()
    for section, keys in SCHEMA[config.kind].items():
        assert section in raw, f"{path.name}: section {section} missing"
        assert set(raw[section] or {}) == set(keys), f"{path.name}: {section} keys"
        for key in keys:
            line = re.search(rf"^\s+{re.escape(key)}:.*$", text, re.MULTILINE)
            assert line and "#" in line.group(0), f"{path.name}: {section}.{key} has no comment"


def test_package_defaults_list_the_schema():
    defaults = yaml.safe_load(DEFAULTS_FILE.read_text())["cubie_dist"]
    assert set(defaults) == set(KINDS)
    for kind, sections in SCHEMA.items():
        assert set(defaults[kind]) == set(sections)
        for section, keys in sections.items():
            assert set(defaults[kind][section] or {}) == set(keys), f"{kind}.{section}"
    # loaded into dask's config on import
    assert dask.config.get("cubie_dist.local-cuda.worker.resources") == {"GPU": 1}


def test_round_trip_through_to_dict():
    config = load_config(SLURM_GPU)
    again = load_config(config.to_dict())
    assert again == config
    assert load_config(config) == config


# --- errors name the key's path ------------------------------------------------------


def test_unknown_key_names_its_path():
    with pytest.raises(ClusterConfigError) as info:
        load_config({"kind": "slurm", "cluster": {"cores": 1, "memory": "1GiB"}, "scale": {"jobz": 2}})
    assert "scale.jobz: unknown key; known: jobs, minimum_jobs, maximum_jobs" in str(info.value)


@pytest.mark.parametrize(
    "profile, overrides, expected",
    [
        ({"kind": "local", "clusterz": {}}, {}, "clusterz: unknown key; known: kind, cluster, scale"),
        ({"kind": "local"}, {"cluster.n_worker": 2}, "cluster.n_worker: unknown key; known: n_workers"),
        ({"kind": "local"}, {"worker": {"gpu": 1}}, "worker.gpu: unknown key; known: resources"),
        ({"kind": "local-cuda", "scale": {"jobs": 1}}, {}, "scale.jobs: unknown key; known: (none)"),
        ({"kind": "pbs"}, {}, "kind: expected one of local, local-cuda, slurm, got 'pbs'"),
        ({"cluster": {}}, {}, "kind: missing"),
    ],
)
def test_unknown_keys_and_kinds(profile, overrides, expected):
    with pytest.raises(ClusterConfigError, match=re.escape(expected)):
        load_config(profile, **overrides)


def test_unknown_key_in_dask_config_is_reported():
    with dask.config.set({"cubie_dist.local.cluster.n_wrokers": 2}):
        with pytest.raises(ClusterConfigError, match=r"cluster\.n_wrokers: unknown key.*dask config"):
            load_config(LOCAL)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"cluster.cores": "four"}, "cluster.cores: expected int, got 'four'"),
        ({"cluster.cores": True}, "cluster.cores: expected int, got True"),
        ({"cluster.cores": 0}, "cluster.cores: expected int >= 1, got 0"),
        ({"cluster.memory": "lots"}, "cluster.memory: expected a size like '16GiB', got 'lots'"),
        ({"cluster.job_extra_directives": "--gres=gpu:1"}, "cluster.job_extra_directives: expected list of str"),
        ({"scale.jobs": -1}, "scale.jobs: expected int >= 0, got -1"),
        ({"security.tls": "yes"}, "security.tls: expected bool, got 'yes'"),
        ({"worker.resources": {"GPU": "one"}}, "worker.resources: expected mapping of resource name"),
    ],
)
def test_wrong_type_names_path_and_source(overrides, expected):
    with pytest.raises(ClusterConfigError, match=re.escape(expected) + r".*\(from keyword override\)"):
        load_config(SLURM_CPU, **overrides)


def test_wrong_type_in_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    text = SLURM_CPU.read_text().replace("cores: 8 ", "cores: four ")
    path.write_text(text)
    with pytest.raises(ClusterConfigError, match=r"cluster\.cores: expected int, got 'four' \(from mine\.yaml\)"):
        load_config(path)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ClusterConfigError) as info:
        load_config(SLURM_CPU, **{"cluster.cores": "four", "cluster.walltime": 3, "scale.jobz": 1})
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert {line.split(":")[0] for line in lines} == {"cluster.cores", "cluster.walltime", "scale.jobz"}


def test_missing_or_bad_file():
    with pytest.raises(ClusterConfigError, match="cannot read cluster profile"):
        load_config(CONFIGS / "nope.yaml")


# --- precedence: keyword > YAML > dask.config > package default ----------------------


def test_precedence_of_the_four_layers():
    key = "cubie_dist.local-cuda.worker.resources"
    assert load_config({"kind": "local-cuda"}).worker["resources"] == {"GPU": 1}  # package
    with dask.config.set({key: {"GPU": 2}}):
        assert load_config({"kind": "local-cuda"}).worker["resources"] == {"GPU": 2}  # dask
        profile = {"kind": "local-cuda", "worker": {"resources": {"GPU": 3}}}
        assert load_config(profile).worker["resources"] == {"GPU": 3}  # YAML
        kw = load_config(profile, worker={"resources": {"GPU": 4}})
        assert kw.worker["resources"] == {"GPU": 4}  # keyword, section dict
        dotted = load_config(profile, **{"worker.resources": {"GPU": 5}})
        assert dotted.worker["resources"] == {"GPU": 5}  # keyword, dotted
        assert dotted.origins["worker.resources"] == "keyword override"


def test_null_and_none_fall_through():
    with dask.config.set({"cubie_dist.slurm.cluster.queue": "from-dask"}):
        config = load_config(SLURM_CPU, **{"cluster.queue": None})  # queue: null in the YAML
        assert config.cluster["queue"] == "from-dask"
        assert config.origins["cluster.queue"] == "dask config cubie_dist.slurm.cluster"
        assert load_config(SLURM_CPU, **{"cluster.queue": "kw"}).cluster["queue"] == "kw"
    # YAML beats dask config
    with dask.config.set({"cubie_dist.slurm.cluster.cores": 99}):
        assert load_config(SLURM_CPU).cluster["cores"] == 8
    # dask config keys may use dashes, as dask's own do
    with dask.config.set({"cubie_dist.slurm.cluster.job-name": "dashed"}):
        assert load_config({**yaml.safe_load(SLURM_CPU.read_text()), "cluster": {"cores": 1, "memory": "1GB"}}).cluster["job_name"] == "dashed"


def test_scale_is_taken_as_a_unit():
    config = load_config(SLURM_CPU, scale={"minimum_jobs": 1, "maximum_jobs": 3})
    assert config.scale == {"jobs": None, "minimum_jobs": 1, "maximum_jobs": 3}
    with pytest.raises(ClusterConfigError, match="scale.jobs: give either jobs"):
        load_config(SLURM_CPU, scale={"jobs": 2, "maximum_jobs": 3})
    with pytest.raises(ClusterConfigError, match="scale.minimum_jobs: 4 is more than"):
        load_config(SLURM_CPU, scale={"minimum_jobs": 4, "maximum_jobs": 3})


def test_slurm_needs_cores_and_memory():
    with pytest.raises(ClusterConfigError) as info:
        load_config({"kind": "slurm"})
    assert "cluster.cores: required for slurm" in str(info.value)
    assert "cluster.memory: required for slurm" in str(info.value)
    # dask-jobqueue's own config counts
    with dask.config.set({"jobqueue.slurm.cores": 2, "jobqueue.slurm.memory": "2GB"}):
        load_config({"kind": "slurm"})


# --- GPU jobs: one dask-cuda worker per GPU ------------------------------------------


@pytest.mark.parametrize(
    "directive, gpus",
    [("--gres=gpu:2", 2), ("--gres=gpu:a100:4", 4), ("--gpus=3", 3), ("--gpus-per-node=a100:2", 2),
     ("--gres=shard:1,gpu:2", 2), ("--exclusive", None)],
)
def test_gpus_per_job(directive, gpus):
    assert gpus_per_job([directive]) == gpus


def test_gpu_processes_follow_gres():
    config = load_config(SLURM_GPU, **{"cluster.job_extra_directives": ["--gres=gpu:4"], "cluster.cores": 8})
    assert config.cluster["processes"] == 4
    with pytest.raises(ClusterConfigError, match="cluster.processes: 3, but each job has 4 GPU"):
        load_config(SLURM_GPU, **{"cluster.job_extra_directives": ["--gres=gpu:4"], "cluster.processes": 3})
    with pytest.raises(ClusterConfigError, match="cluster.worker_command: dask_cuda starts one worker per GPU"):
        load_config(SLURM_GPU, **{"cluster.job_extra_directives": ["--exclusive"]})
    with pytest.raises(ClusterConfigError, match="at least as many cores"):
        load_config(SLURM_CPU, **{"cluster.processes": 9})


# --- job scripts, no scheduler -------------------------------------------------------


def test_slurm_gpu_job_script():
    script = job_script(SLURM_GPU)
    lines = script.splitlines()
    assert "#SBATCH --gres=gpu:1" in lines
    assert "#SBATCH -t 01:00:00" in lines
    assert "#SBATCH --cpus-per-task=4" in lines
    assert "module load cuda" in lines and "export OMP_NUM_THREADS=1" in lines
    # the prologue runs before the worker
    assert lines.index("module load cuda") < len(lines) - 1
    command = lines[-1]
    assert " -m dask_cuda.cli tcp://<insert-scheduler-address-here>:8786 " in command
    assert "--resources GPU=1" in command
    assert "--nworkers" not in command  # dask-cuda starts one per GPU itself


def test_slurm_gpu_job_script_with_four_gpus():
    script = job_script(SLURM_GPU, **{"cluster.job_extra_directives": ["--gres=gpu:4"], "cluster.cores": 8})
    assert "#SBATCH --gres=gpu:4" in script
    command = script.splitlines()[-1]
    assert "--nthreads 2" in command and "--memory-limit 8.00GiB" in command
    assert "--resources GPU=1" in command


def test_slurm_cpu_job_script():
    script = job_script(SLURM_CPU, **{"cluster.interface": "lo", "worker.resources": {"CPU_JOB": 1, "MEM": 0.5}})
    assert "gres" not in script
    command = script.splitlines()[-1]
    assert " -m distributed.cli.dask_worker " in command
    assert "--interface lo" in command
    assert "--resources CPU_JOB=1,MEM=0.5" in command


def test_job_script_is_what_slurmcluster_submits():
    """Same text as dask-jobqueue's cluster.job_script(), scheduler address aside."""
    from dask_jobqueue import SLURMCluster

    config = load_config(SLURM_GPU)
    kwargs = config.cluster_kwargs()
    kwargs["worker_extra_args"] = kwargs["worker_extra_args"] + ["--resources", "GPU=1"]
    with SLURMCluster(scheduler_options={"dashboard_address": ":0"}, **kwargs) as cluster:
        expected = cluster.job_script().replace(
            cluster.scheduler_address.split("://")[1], "<insert-scheduler-address-here>:8786"
        )
    assert job_script(SLURM_GPU) == expected


def test_job_script_only_for_slurm():
    with pytest.raises(ClusterConfigError, match="only slurm profiles have a job script"):
        job_script(LOCAL)


def test_tls_job_script_passes_certificates(tmp_path):
    paths = _write_certificates(tmp_path)
    script = job_script(SLURM_CPU, security={"tls": True, **paths})
    command = script.splitlines()[-1]
    assert command.split()[3] == "tls://<insert-scheduler-address-here>:8786"
    assert f"--tls-ca-file {paths['ca_file']}" in command


# --- starting clusters ---------------------------------------------------------------


def test_local_profile_starts_a_local_cluster():
    from distributed import LocalCluster

    with from_config(LOCAL, **{"cluster.n_workers": 1}) as cluster, Client(cluster) as client:
        assert isinstance(cluster, LocalCluster)
        assert len(cluster.workers) == 1
        assert client.submit(square, 7).result(timeout=30) == 49
    assert cluster.status.name == "closed"


@requires_cryptography
def test_temporary_tls_local_cluster():
    overrides = {"cluster.n_workers": 1, "cluster.processes": False, "security.temporary": True}
    with from_config(LOCAL, **overrides) as cluster, Client(cluster) as client:
        assert cluster.scheduler_address.startswith("tls://")
        assert client.submit(square, 3).result(timeout=30) == 9


@requires_cryptography
def test_tls_with_certificate_files(tmp_path):
    security = {"tls": True, **_write_certificates(tmp_path)}
    overrides = {"cluster.n_workers": 1, "cluster.processes": False}
    with from_config(LOCAL, security=security, **overrides) as cluster, Client(cluster) as client:
        assert cluster.scheduler_address.startswith("tls://")
        assert client.submit(square, 4).result(timeout=30) == 16


def test_tls_needs_its_files(tmp_path):
    with pytest.raises(ClusterConfigError) as info:
        load_config(LOCAL, security={"tls": True, "ca_file": str(tmp_path / "ca.pem")})
    message = str(info.value)
    assert "security.ca_file: no such file" in message
    assert "security.cert: required when security.tls is true" in message


def test_local_cuda_without_gpu_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(cluster_mod, "visible_gpu_count", lambda: (0, "NVML: Library Not Found"))
    with pytest.raises(NoGPUError, match=re.escape(NO_GPU_MESSAGE)):
        from_config(CONFIGS / "local-cuda.yaml")


def test_local_cuda_on_this_machine_without_gpu():
    count, why = cluster_mod.visible_gpu_count()
    if count:
        pytest.skip(f"a GPU is visible ({why})")
    with pytest.raises(NoGPUError) as info:
        from_config(CONFIGS / "local-cuda.yaml")
    assert str(info.value).startswith(NO_GPU_MESSAGE)


def test_slurm_without_sbatch_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="sbatch not found on PATH"):
        from_config(SLURM_CPU)


def _write_certificates(folder: Path) -> dict[str, str]:
    """One throw-away CA/certificate/key (needs cryptography), as PEM files."""
    pytest.importorskip("cryptography", reason="making test certificates needs 'cryptography'")
    from distributed.security import Security

    temporary = Security.temporary()
    paths = {}
    for name, pem in (("ca_file", temporary.tls_ca_file), ("cert", temporary.tls_worker_cert),
                      ("key", temporary.tls_worker_key)):
        path = folder / f"{name}.pem"
        path.write_text(pem)
        paths[name] = str(path)
    return paths
