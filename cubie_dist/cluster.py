"""Start the cluster a profile describes, or show the job script it would submit.

>>> from dask.distributed import Client
>>> from cubie_dist.cluster import from_config, job_script
>>> cluster = from_config("cluster_configs/slurm-cpu.yaml", **{"scale.jobs": 4})
>>> client = Client(cluster)           # not Client(cluster.scheduler_address): TLS
>>> print(job_script("cluster_configs/slurm-gpu.yaml"))   # no scheduler, no SLURM needed

Profiles, their layers (keyword override > profile > dask config > package
default) and their validation are described in ``cubie_dist.config``; the
keys, with comments, are in ``cubie_dist/cubie-dist.yaml`` and in each file of
``cluster_configs/``.

The three kinds map onto their classes:

``local``
    ``distributed.LocalCluster(**cluster)``; ``scale.minimum_workers`` /
    ``maximum_workers`` make it adaptive.
``local-cuda``
    ``dask_cuda.LocalCUDACluster(**cluster)``, one worker process per GPU. With
    no GPU visible it raises ``NoGPUError`` before dask-cuda would fail inside
    NVML.
``slurm``
    ``dask_jobqueue.SLURMCluster(**cluster)``, then ``scale(jobs=...)`` or
    ``adapt(minimum_jobs=..., maximum_jobs=...)`` (nothing set: one job).
    ``worker.resources`` becomes ``--resources NAME=N`` on the worker command.

``worker.resources`` is passed to local workers directly; ``security`` becomes
a ``distributed.security.Security`` (``Security.temporary()`` for
``security.temporary``) and turns the scheduler address into ``tls://...``.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import dask.config

from cubie_dist.config import (
    ClusterConfig,
    ClusterConfigError,
    load_config,
)

__all__ = [
    "ClusterConfig",
    "ClusterConfigError",
    "NO_GPU_MESSAGE",
    "NoGPUError",
    "from_config",
    "job_script",
    "load_config",
    "make_security",
    "visible_gpu_count",
]

NO_GPU_MESSAGE = "no CUDA GPU visible; use cluster_configs/local.yaml"
PLACEHOLDER_ADDRESS = "<insert-scheduler-address-here>:8786"

# SLURMCluster keywords that belong to the cluster (scheduler side), not to each job.
_SLURM_CLUSTER_ONLY = ("scheduler_options", "shared_temp_directory")


class NoGPUError(RuntimeError):
    """A ``local-cuda`` profile was started where no CUDA GPU is visible."""


def from_config(source, **overrides):
    """Start the cluster a profile describes and scale it as configured.

    Parameters
    ----------
    source : str, os.PathLike, Mapping or ClusterConfig
        A profile such as ``cluster_configs/local.yaml``, its content as a
        dict, or a ``ClusterConfig`` from ``load_config``.
    **overrides
        As for ``load_config``: ``**{"cluster.cores": 4}``,
        ``cluster={"cores": 4}``, ``None`` leaves a key alone.

    Returns
    -------
    distributed.deploy.Cluster
        Started: local workers are running; SLURM jobs are submitted (use
        ``Client(cluster).wait_for_workers(n)`` to wait for them). Close it
        with ``cluster.close()`` or use it as a context manager.

    Raises
    ------
    ClusterConfigError
        The profile or an override is invalid (nothing was started).
    NoGPUError
        ``local-cuda`` with no CUDA GPU visible.
    RuntimeError
        ``slurm`` where ``sbatch`` is not on PATH.
    """
    config = load_config(source, **overrides)
    return _STARTERS[config.kind](config)


def job_script(source, **overrides) -> str:
    """The batch script a ``slurm`` profile submits per job (dask-jobqueue's
    ``cluster.job_script()``), built without a scheduler or SLURM.

    The scheduler address reads ``tcp://<insert-scheduler-address-here>:8786``
    (``tls://`` with TLS) and the worker name ``dummy-name``, as in
    dask-jobqueue. Only ``security.temporary`` starts (and closes) a
    scheduler, since its certificates are made per cluster.
    """
    config = load_config(source, **overrides)
    if config.kind != "slurm":
        raise ClusterConfigError(
            f"kind: {config.source} is a {config.kind!r} profile; only slurm profiles have a job script"
        )
    from dask_jobqueue import SLURMCluster
    from dask_jobqueue.slurm import SLURMJob

    security = make_security(config)
    kwargs = _slurm_kwargs(config)
    if config.security["temporary"]:
        with SLURMCluster(security=security, **kwargs) as cluster:
            script = cluster.job_script()
        return script.replace(cluster.scheduler_address.split("://")[1], PLACEHOLDER_ADDRESS)

    protocol = "tls://" if security is not None else None
    for key in _SLURM_CLUSTER_ONLY:
        kwargs.pop(key, None)
    job = SLURMJob(
        scheduler=(protocol or "tcp://") + PLACEHOLDER_ADDRESS,
        name="dummy-name",
        protocol=protocol,
        security=security,
        **kwargs,
    )
    return job.job_script()


def make_security(config: ClusterConfig):
    """``Security`` for a config's ``security`` section, or ``None`` with TLS off.

    With ``tls`` the one certificate and key serve scheduler, workers and
    client alike, and encryption is required.
    """
    from distributed.security import Security

    sec = config.security
    if sec["temporary"]:
        return Security.temporary()
    if not sec["tls"]:
        return None
    ca, cert, key = (os.path.expanduser(sec[k]) for k in ("ca_file", "cert", "key"))
    return Security(
        tls_ca_file=ca,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        require_encryption=True,
    )


def visible_gpu_count() -> tuple[int, str]:
    """(number of CUDA GPUs NVML sees, why) without touching the CUDA driver.

    An empty ``CUDA_VISIBLE_DEVICES`` (or ``-1``) counts as none.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip() in ("", "-1"):
        return 0, f"CUDA_VISIBLE_DEVICES={env!r}"
    try:
        import pynvml
    except ImportError:
        return 0, "pynvml is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return 0, f"NVML: {exc}"
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    return count, f"NVML sees {count} GPU(s)"


# --- one starter per kind ------------------------------------------------------------


def _local_kwargs(config: ClusterConfig) -> dict[str, Any]:
    kwargs = config.cluster_kwargs()
    security = make_security(config)
    if security is not None:
        kwargs["security"] = security
    if config.worker["resources"]:
        kwargs["resources"] = dict(config.worker["resources"])
    return kwargs


def _start_local(config: ClusterConfig):
    from distributed import LocalCluster

    cluster = LocalCluster(**_local_kwargs(config))
    low, high = config.scale["minimum_workers"], config.scale["maximum_workers"]
    if low is not None or high is not None:
        adapt = {"minimum": low or 0}
        if high is not None:
            adapt["maximum"] = high
        cluster.adapt(**adapt)
    return cluster


def _start_local_cuda(config: ClusterConfig):
    count, why = visible_gpu_count()
    if count == 0:
        raise NoGPUError(f"{NO_GPU_MESSAGE} ({why})")
    from dask_cuda import LocalCUDACluster

    return LocalCUDACluster(**_local_kwargs(config))


def _resources_arg(resources) -> str:
    # Commas, not spaces: dask-jobqueue joins the command line unquoted.
    return ",".join(f"{name}={value:g}" for name, value in resources.items())


def _slurm_kwargs(config: ClusterConfig) -> dict[str, Any]:
    """SLURMCluster keywords, ``worker.resources`` folded into ``worker_extra_args``."""
    kwargs = config.cluster_kwargs()
    if config.worker["resources"]:
        extra = kwargs.get("worker_extra_args")
        if extra is None:
            extra = dask.config.get("jobqueue.slurm.worker-extra-args", None) or []
        kwargs["worker_extra_args"] = [*extra, "--resources", _resources_arg(config.worker["resources"])]
    return kwargs


def _start_slurm(config: ClusterConfig):
    from dask_jobqueue import SLURMCluster

    if shutil.which("sbatch") is None:
        raise RuntimeError(
            "sbatch not found on PATH: a slurm profile starts from a SLURM login node "
            "(job_script() shows what would be submitted, anywhere)"
        )
    cluster = SLURMCluster(security=make_security(config), **_slurm_kwargs(config))
    scale = config.scale
    if scale["minimum_jobs"] is not None or scale["maximum_jobs"] is not None:
        cluster.adapt(minimum_jobs=scale["minimum_jobs"] or 0, maximum_jobs=scale["maximum_jobs"])
    else:
        cluster.scale(jobs=1 if scale["jobs"] is None else scale["jobs"])
    return cluster


_STARTERS = {"local": _start_local, "local-cuda": _start_local_cuda, "slurm": _start_slurm}
