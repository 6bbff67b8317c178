"""Cluster profiles: read, merge with dask's config, validate.

A profile (``cluster_configs/*.yaml``, or the same thing as a dict) names its
``kind`` (``local``, ``local-cuda`` or ``slurm``) and up to four sections:

``cluster``
    keywords for the cluster class (``LocalCluster``, ``LocalCUDACluster``,
    ``SLURMCluster``);
``scale``
    how many workers or jobs (fixed or adaptive);
``security``
    TLS on or off, certificate paths, or throw-away certificates;
``worker``
    what each worker advertises (``resources``).

The keys of each section, with a comment each, are listed in the package
defaults ``cubie_dist/cubie-dist.yaml``, which this module loads into dask's
config with ``dask.config.update_defaults`` on import. A value is looked up,
first hit wins:

1. a keyword override: ``load_config(path, **{"cluster.cores": 4})`` (a dotted
   ``"section.key"``) or ``load_config(path, cluster={"cores": 4})`` (a
   section dict, merged key by key into the profile's section, not replacing
   it);
2. the profile;
3. ``dask.config.get("cubie_dist.<kind>.<section>.<key>")``: the user's dask
   YAML files, ``DASK_CUBIE_DIST__...`` variables, ``dask.config.set``, and
   last the package defaults.

``None`` (YAML ``null``) means "not set here" in every layer, so the next layer
is asked; a key unset everywhere is not passed to the cluster class, whose own
default (for SLURM, dask-jobqueue's ``jobqueue.slurm.*`` config) then applies.
List and dict values replace, they are not merged. The ``scale`` section is
taken as a unit from the first layer that sets any of its keys, so an override
``scale.jobs=2`` replaces a profile's adaptive ``minimum_jobs``/``maximum_jobs``.

Every problem is reported at once, one line each, starting with the key's
path: ``cluster.cores: expected int, got 'four' (from slurm-cpu.yaml)``,
``scale.jobz: unknown key; known: jobs, minimum_jobs, maximum_jobs``.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import dask.config
import yaml
from dask.utils import parse_bytes

__all__ = [
    "KINDS",
    "SCHEMA",
    "SECTIONS",
    "ClusterConfig",
    "ClusterConfigError",
    "gpus_per_job",
    "load_config",
]

CONFIG_ROOT = "cubie_dist"
KINDS = ("local", "local-cuda", "slurm")
SECTIONS = ("cluster", "scale", "security", "worker")
DEFAULTS_FILE = Path(__file__).with_name("cubie-dist.yaml")


class ClusterConfigError(ValueError):
    """A profile, an override or dask's config holds a bad key or value.

    The message has one line per problem, each starting with the key's path.
    """


# --- value types ---------------------------------------------------------------------


@attrs.frozen
class _Type:
    """What a key accepts: ``name`` for messages, ``ok`` the check.

    ``minimum`` (ints only) is checked after the type, so a wrong type reads
    ``expected int, got 'four'`` and a bad number ``expected int >= 1, got 0``.
    """

    name: str
    ok: Callable[[Any], bool]
    minimum: int | None = None

    def problem(self, value: Any) -> str | None:
        if not self.ok(value):
            return f"expected {self.name}, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"expected {self.name} >= {self.minimum}, got {value!r}"
        return None


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_bytes(v):
    if _is_int(v):
        return v >= 0
    if isinstance(v, str):
        try:
            parse_bytes(v)
        except (ValueError, TypeError):
            return False
        return True
    return False


def _is_memory_limit(v):
    return v == "auto" or _is_bytes(v) or (isinstance(v, float) and 0 < v <= 1)


def _is_str_list(v):
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_devices(v):
    return isinstance(v, str) or (
        isinstance(v, list) and all(_is_int(x) or isinstance(x, str) for x in v)
    )


def _is_resources(v):
    return isinstance(v, Mapping) and all(
        isinstance(k, str) and _is_number(x) and x >= 0 for k, x in v.items()
    )


INT = _Type("int", _is_int, minimum=1)
COUNT = _Type("int", _is_int, minimum=0)
NUMBER = _Type("number", _is_number)
BOOL = _Type("bool", lambda v: isinstance(v, bool))
STR = _Type("str", lambda v: isinstance(v, str))
STR_LIST = _Type("list of str", _is_str_list)
MAPPING = _Type("mapping", lambda v: isinstance(v, Mapping))
BYTES = _Type("a size like '16GiB'", _is_bytes)
MEMORY_LIMIT = _Type("a size like '4GiB', a fraction in (0, 1], or 'auto'", _is_memory_limit)
DEVICES = _Type("'0,1' or a list of GPU indices", _is_devices)
RESOURCES = _Type("mapping of resource name to number >= 0, like {GPU: 1}", _is_resources)

_SECURITY = {"tls": BOOL, "temporary": BOOL, "ca_file": STR, "cert": STR, "key": STR}
_WORKER = {"resources": RESOURCES}

# Keys and types per kind and section; defaults and comments are in cubie-dist.yaml
# (tests/dist/test_cluster_config.py checks that both list the same keys).
SCHEMA: dict[str, dict[str, dict[str, _Type]]] = {
    "local": {
        "cluster": {
            "n_workers": INT,
            "threads_per_worker": INT,
            "memory_limit": MEMORY_LIMIT,
            "processes": BOOL,
            "dashboard_address": STR,
            "local_directory": STR,
        },
        "scale": {"minimum_workers": COUNT, "maximum_workers": INT},
        "security": _SECURITY,
        "worker": _WORKER,
    },
    "local-cuda": {
        "cluster": {
            "CUDA_VISIBLE_DEVICES": DEVICES,
            "n_workers": INT,
            "threads_per_worker": INT,
            "memory_limit": MEMORY_LIMIT,
            "device_memory_limit": MEMORY_LIMIT,
            "rmm_pool_size": BYTES,
            "rmm_managed_memory": BOOL,
            "rmm_async": BOOL,
            "dashboard_address": STR,
            "local_directory": STR,
        },
        "scale": {},
        "security": _SECURITY,
        "worker": _WORKER,
    },
    "slurm": {
        "cluster": {
            "queue": STR,
            "account": STR,
            "walltime": STR,
            "cores": INT,
            "memory": BYTES,
            "processes": INT,
            "job_cpu": INT,
            "job_mem": STR,
            "job_name": STR,
            "job_extra_directives": STR_LIST,
            "job_directives_skip": STR_LIST,
            "job_script_prologue": STR_LIST,
            "worker_command": STR,
            "worker_extra_args": STR_LIST,
            "python": STR,
            "shebang": STR,
            "nanny": BOOL,
            "death_timeout": NUMBER,
            "interface": STR,
            "local_directory": STR,
            "log_directory": STR,
            "shared_temp_directory": STR,
            "scheduler_options": MAPPING,
        },
        "scale": {"jobs": COUNT, "minimum_jobs": COUNT, "maximum_jobs": INT},
        "security": _SECURITY,
        "worker": _WORKER,
    },
}

# The scale keys of each kind: (fixed, adaptive minimum, adaptive maximum).
_SCALE_KEYS = {
    "local": (None, "minimum_workers", "maximum_workers"),
    "local-cuda": (None, None, None),
    "slurm": ("jobs", "minimum_jobs", "maximum_jobs"),
}


def _load_defaults() -> None:
    with open(DEFAULTS_FILE) as f:
        dask.config.update_defaults(yaml.safe_load(f))


_load_defaults()


# --- the validated result ------------------------------------------------------------


@attrs.frozen
class ClusterConfig:
    """A validated profile: every key of its kind, ``None`` where unset.

    Attributes
    ----------
    kind : str
        ``"local"``, ``"local-cuda"`` or ``"slurm"``.
    cluster, scale, security, worker : dict
        Every key of the kind's sections (see ``SCHEMA``), resolved through
        the layers described in the module docstring.
    source : str
        The profile's path, or ``"<dict>"``.
    origins : dict
        ``"section.key"`` to where its value came from, for set keys.
    """

    kind: str
    cluster: dict[str, Any]
    scale: dict[str, Any]
    security: dict[str, Any]
    worker: dict[str, Any]
    source: str = attrs.field(default="<dict>", eq=False)
    origins: dict[str, str] = attrs.field(factory=dict, eq=False, repr=False)

    def cluster_kwargs(self) -> dict[str, Any]:
        """The ``cluster`` keys that are set, as keywords for the cluster class."""
        return {k: v for k, v in self.cluster.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML-ready), keeping only set keys; loads back to an equal config."""
        out: dict[str, Any] = {"kind": self.kind}
        for section in SECTIONS:
            values = {k: v for k, v in getattr(self, section).items() if v is not None}
            if values:
                out[section] = values
        return out


# --- loading -------------------------------------------------------------------------


def load_config(source, **overrides) -> ClusterConfig:
    """Read a cluster profile, merge it with overrides and dask's config, validate it.

    Nothing is started (see ``cubie_dist.cluster.from_config``).

    Parameters
    ----------
    source : str, os.PathLike, Mapping or ClusterConfig
        A profile YAML file (e.g. ``cluster_configs/slurm-cpu.yaml``), the same
        content as a dict, or an already loaded ``ClusterConfig``.
    **overrides
        ``"section.key"`` keywords (``**{"cluster.cores": 4}``), section dicts
        (``cluster={"cores": 4}``) or ``kind``. ``None`` leaves a key to the
        lower layers.

    Raises
    ------
    ClusterConfigError
        Listing every unknown key, wrong type and inconsistent setting, each
        with its path.
    """
    profile, origin = _read_profile(source)
    flat = _flatten_overrides(overrides)
    errors: list[str] = []

    kind = flat.get("kind") if flat.get("kind") is not None else profile.get("kind")
    if kind is None:
        raise ClusterConfigError(f"kind: missing; expected one of {', '.join(KINDS)} ({origin})")
    if kind not in KINDS:
        raise ClusterConfigError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    schema = SCHEMA[kind]

    label = os.path.basename(origin) if origin != "<dict>" else origin
    sections = _profile_sections(profile, schema, errors, label)
    _check_override_keys(flat, schema, errors)
    _check_dask_config_keys(kind, schema, errors)

    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    origins: dict[str, str] = {}
    for section, keys in schema.items():
        layers = [
            ({k: flat.get(f"{section}.{k}") for k in keys}, "keyword override"),
            ({k: sections[section].get(k) for k in keys}, label),
            (
                {k: dask.config.get(f"{CONFIG_ROOT}.{kind}.{section}.{k}", None) for k in keys},
                f"dask config {CONFIG_ROOT}.{kind}.{section}",
            ),
        ]
        if section == "scale":  # a unit: the first layer that says anything
            said = [layer for layer in layers if any(v is not None for v in layer[0].values())]
            layers = said[:1] or layers[-1:]
        for key, kind_type in keys.items():
            for layer, where in layers:
                if layer[key] is not None:
                    value = layer[key]
                    problem = kind_type.problem(value)
                    if problem:
                        errors.append(f"{section}.{key}: {problem} (from {where})")
                    values[section][key] = copy.deepcopy(value)
                    origins[f"{section}.{key}"] = where
                    break
            else:
                values[section][key] = None
    if errors:
        raise ClusterConfigError("\n".join(errors))

    _check_consistency(kind, values, origins, errors)
    if errors:
        raise ClusterConfigError("\n".join(errors))
    return ClusterConfig(kind=kind, source=origin, origins=origins, **values)


def _read_profile(source) -> tuple[dict[str, Any], str]:
    if isinstance(source, ClusterConfig):
        return source.to_dict(), source.source
    if isinstance(source, Mapping):
        return dict(source), "<dict>"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected a profile path, dict or ClusterConfig, got {type(source).__name__}")
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ClusterConfigError(f"{path}: cannot read cluster profile ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ClusterConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ClusterConfigError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    return dict(data), str(path)


def _flatten_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in overrides.items():
        if name in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ClusterConfigError(f"{name}: expected a mapping of keys, got {value!r}")
            for key, item in value.items():
                flat[f"{name}.{key}"] = item
        else:
            flat[name] = value
    return flat


def _unknown(path: str, known, where: str = "") -> str:
    message = f"{path}: unknown key; known: {', '.join(known) if known else '(none)'}"
    return f"{message} ({where})" if where else message


def _profile_sections(profile, schema, errors, label) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for name, content in profile.items():
        if name == "kind":
            continue
        if name not in SECTIONS:
            errors.append(_unknown(str(name), ("kind", *SECTIONS), label))
            continue
        if content is None:
            continue
        if not isinstance(content, Mapping):
            errors.append(f"{name}: expected a mapping of keys, got {content!r} ({label})")
            continue
        for key, value in content.items():
            if key not in schema[name]:
                errors.append(_unknown(f"{name}.{key}", schema[name], label))
            else:
                sections[name][key] = value
    return sections


def _check_override_keys(flat, schema, errors) -> None:
    for path in flat:
        if path == "kind":
            continue
        section, _, key = path.partition(".")
        if section not in SECTIONS:
            errors.append(_unknown(path, ("kind", *(f"{s}.<key>" for s in SECTIONS)), "keyword override"))
        elif key not in schema[section]:
            errors.append(_unknown(path, schema[section], "keyword override"))


def _check_dask_config_keys(kind, schema, errors) -> None:
    """Typos in the user's dask config would otherwise be ignored silently."""
    for section, keys in schema.items():
        found = dask.config.get(f"{CONFIG_ROOT}.{kind}.{section}", None)
        if not isinstance(found, Mapping):
            continue
        for key in found:
            if key not in keys and str(key).replace("-", "_") not in keys:
                errors.append(_unknown(f"{section}.{key}", keys, f"dask config {CONFIG_ROOT}.{kind}.{section}"))


# --- consistency between keys --------------------------------------------------------

_GPU_DIRECTIVE = re.compile(
    r"^--(?:gres=(?:.*,)?gpu(?::[^:,=]+)?:(?P<gres>\d+)|gpus(?:-per-node)?=(?:[^:,=]+:)?(?P<gpus>\d+))"
)


def gpus_per_job(directives) -> int | None:
    """GPUs one job asks for, from ``--gres=gpu[:type]:N``, ``--gpus=N`` or
    ``--gpus-per-node=N`` among ``job_extra_directives``; ``None`` if none does."""
    for line in directives or ():
        match = _GPU_DIRECTIVE.match(line.strip())
        if match:
            return int(match.group("gres") or match.group("gpus"))
    return None


def _is_dask_cuda(worker_command) -> bool:
    return bool(worker_command) and worker_command.split()[0].startswith("dask_cuda")


def _check_consistency(kind, values, origins, errors) -> None:
    cluster, scale, security = values["cluster"], values["scale"], values["security"]

    fixed, low, high = _SCALE_KEYS[kind]
    if fixed and scale[fixed] is not None and (scale[low] is not None or scale[high] is not None):
        errors.append(f"scale.{fixed}: give either {fixed} (fixed) or {low}/{high} (adaptive), not both")
    if low and scale[low] is not None and scale[high] is not None and scale[low] > scale[high]:
        errors.append(f"scale.{low}: {scale[low]} is more than scale.{high} ({scale[high]})")

    if kind == "slurm":
        for key in ("cores", "memory"):
            if cluster[key] is None and dask.config.get(f"jobqueue.slurm.{key}", None) is None:
                errors.append(f"cluster.{key}: required for slurm (per job); set it in the profile or override it")
        gpus = gpus_per_job(cluster["job_extra_directives"])
        if _is_dask_cuda(cluster["worker_command"]):
            # dask-cuda starts one worker per GPU of the job; dask-jobqueue must expect as many.
            if gpus is None:
                if not any("gpu" in d for d in cluster["job_extra_directives"] or ()):
                    errors.append(
                        "cluster.worker_command: dask_cuda starts one worker per GPU, but no GPUs "
                        "are requested; add e.g. '--gres=gpu:1' to cluster.job_extra_directives"
                    )
            elif cluster["processes"] is None:
                cluster["processes"] = gpus
                origins["cluster.processes"] = f"one per GPU of --gres=gpu:{gpus}"
            elif cluster["processes"] != gpus:
                errors.append(
                    f"cluster.processes: {cluster['processes']}, but each job has {gpus} GPU(s) and "
                    f"dask-cuda starts one worker per GPU; set processes: {gpus}"
                )
        if cluster["processes"] and cluster["cores"] and cluster["processes"] > cluster["cores"]:
            errors.append(
                f"cluster.processes: {cluster['processes']} worker processes need at least as "
                f"many cores, got cluster.cores: {cluster['cores']}"
            )

    if security["tls"] and not security["temporary"]:
        for key in ("ca_file", "cert", "key"):
            path = security[key]
            if path is None:
                errors.append(f"security.{key}: required when security.tls is true (or set security.temporary)")
            elif not os.path.isfile(os.path.expanduser(path)):
                errors.append(f"security.{key}: no such file: {path}")
    if security["temporary"] and importlib.util.find_spec("cryptography") is None:
        errors.append("security.temporary: needs the 'cryptography' package (pip install cryptography)")
