"""Compiled kernels cached on disk, so a second process does not compile again.

numba caches compiled code only for functions defined in a module that has a
file and a name it can import again (not for closures or ``exec``'d code).
So a target writes its batch kernel as a small module file into the cache
folder, named by a fingerprint of everything that changes the compiled code,
and compiles it with ``cache=True``; numba keeps the machine code in the
folder's ``__pycache__``. The device functions the kernel calls (the loop
driver and everything under it) are closures built in this process: they are
placed into the module's namespace before its code runs, and their compiled
code is part of the kernel's cache entry. Because the module's name is the
fingerprint, a cached entry is only ever loaded for the same code.

The fingerprint (:func:`fingerprint`) covers the system's generated source,
the method's tableau, every controller, output and loop setting, the buffer
layout, the precision, the target and its lanes, the versions of Python,
numpy, numba and llvmlite, and a digest of cubie_kernel's own source files
(so an edited checkout never loads stale code).

Where
-----
1. the ``CUBIE_CACHE_DIR`` environment variable;
2. else dask's config key ``cubie.cache-dir`` (in processes that use dask,
   such as cubie_dist's workers);
3. else ``$XDG_CACHE_HOME/cubie-dist/kernels`` (``~/.cache/...``).

``CUBIE_CACHE_DIR=off`` (or an unwritable folder, with a warning) compiles
in memory only, as numba does by default.

Several processes may fill one folder at once: a module file is written
under a temporary name and linked into place only if no other process got
there first, and numba writes its own index and data files the same way.
One folder may also be shared by machines of different CPUs (a cluster's
home directory): the lanes (vector width) are part of the fingerprint, and
numba keys its machine code by the CPU name and features as well.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import itertools
import linecache
import os
import pathlib
import platform
import secrets
import sys
import tempfile
import types
import warnings
from typing import Any, Mapping

import attrs
import numpy as np

#: Environment variable naming the cache folder ("off": no disk cache).
CACHE_DIR_ENV = "CUBIE_CACHE_DIR"
#: dask config key naming the cache folder.
DASK_CONFIG_KEY = "cubie.cache-dir"
#: Value of :data:`CACHE_DIR_ENV` that turns the disk cache off.
OFF = "off"
#: Prefix of generated module names.
MODULE_PREFIX = "cubie_kernel_cache_"


def _distinct_function_ids() -> bool:
    """Make numba's function ids unique across processes, not only within one.

    numba tells apart closures made from one definition (every allocator,
    every driver) by a per-process counter in their machine-code names. A
    cached kernel carries the code of the closures it calls under those
    names, so two kernels compiled by two processes can both contain a
    ``drive`` numbered, say, 11; loaded into one process, the second then
    calls the first one's code (seen: a Lorenz kernel running an
    exponential-decay driver). Starting this process's counter at a random
    48-bit offset makes such a clash vanishingly unlikely. Returns False
    (and the disk cache stays off) if numba no longer has the counter.
    """
    try:
        from numba.core.bytecode import FunctionIdentity
    except ImportError:  # pragma: no cover - a numba without it
        return False
    if not isinstance(getattr(FunctionIdentity, "_unique_ids", None), itertools.count):
        return False  # pragma: no cover
    FunctionIdentity._unique_ids = itertools.count(secrets.randbits(48) << 8)
    return True


#: Whether compiled kernels may be shared between processes (see above).
SHAREABLE = _distinct_function_ids()


def cache_dir() -> pathlib.Path | None:
    """The kernel cache folder, or None when the disk cache is off."""
    if not SHAREABLE:  # pragma: no cover - see _distinct_function_ids
        return None
    chosen = os.environ.get(CACHE_DIR_ENV)
    if chosen is None:
        chosen = _dask_config_dir()
    if chosen is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache"
        )
        chosen = os.path.join(base, "cubie-dist", "kernels")
    if chosen.strip().lower() == OFF:
        return None
    return pathlib.Path(chosen).expanduser()


def _dask_config_dir() -> str | None:
    # only where dask is in use already: importing it costs more than a cached load
    if "dask" not in sys.modules:
        return None
    import dask.config

    value = dask.config.get(DASK_CONFIG_KEY, default=None)
    return None if value is None else str(value)


@functools.lru_cache(maxsize=1)
def library_fingerprint() -> str:
    """Digest of the library versions and of cubie_kernel's own source files."""
    import llvmlite
    import numba

    digest = hashlib.sha256()
    for part in (
        platform.python_version(), platform.machine(), np.__version__,
        numba.__version__, llvmlite.__version__,
    ):
        digest.update(part.encode() + b"\0")
    package = pathlib.Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def describe(value: Any) -> str:
    """A stable text for a settings value (same value -> same text, any process).

    attrs instances become their class and fields, systems their definition,
    types and other callables their qualified name (a user's metric function
    is told apart by its module and name; compiled callables are built from
    the settings that are described).
    """
    if hasattr(value, "definition_key"):
        return f"system{value.definition_key!r}"
    if attrs.has(type(value)):
        fields = ", ".join(
            f"{f.name}={describe(getattr(value, f.name))}" for f in attrs.fields(type(value))
        )
        return f"{type(value).__qualname__}({fields})"
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, np.ndarray):  # repr() elides long arrays
        return f"array({value.dtype.str}, {value.shape}, {value.tolist()!r})"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(describe(v) for v in value) + ")"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in sorted(value.items())) + "}"
    if callable(value):
        return f"<fn {getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', '?')}>"
    return repr(value)


def fingerprint(*parts: Any) -> str:
    """Hex digest of :func:`describe` of ``parts`` and :func:`library_fingerprint`."""
    digest = hashlib.sha256(library_fingerprint().encode())
    for part in parts:
        digest.update(describe(part).encode() + b"\0")
    return digest.hexdigest()


def _write_once(path: pathlib.Path, source: str) -> None:
    """Create ``path`` with ``source`` unless it exists (safe across processes)."""
    if path.exists():
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(source)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # fails if another process created it meanwhile
        except FileExistsError:
            pass
        except OSError:  # no hard links here: last writer wins, same content
            os.replace(tmp, path)
            tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def import_source(
    kind: str, source: str, namespace: Mapping[str, Any] | None = None, identity: str = ""
) -> types.ModuleType:
    """Import generated ``source`` as a named module (a file in the cache folder).

    numba can load cached code only if every function it calls lives in a
    module it can import again by name, so generated code (a system's
    functions, a step, a batch kernel) is never ``exec``'d anonymously.
    The module's name is ``kind`` plus a digest of ``source`` and
    ``identity`` (a description of the objects in ``namespace``, which are
    put into the module before its code runs): one name, one code. The same
    name in one process returns the same module. Without a usable cache
    folder the module is built in memory, still registered by name.
    """
    digest = hashlib.sha256((source + "\0" + identity).encode()).hexdigest()[:40]
    name = f"{MODULE_PREFIX}{kind}_{digest}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    folder = cache_dir()
    path = None
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}.py"
            _write_once(path, source)
        except OSError as error:
            warnings.warn(
                f"cubie kernel cache folder {str(folder)!r} is not writable ({error}); "
                f"compiling in memory (set {CACHE_DIR_ENV} to a writable folder, or to "
                f"'{OFF}')",
                RuntimeWarning,
                stacklevel=3,
            )
            path = None
    if path is None:
        module = types.ModuleType(name)
        module.__dict__.update(namespace or {})
        code = source.replace("cache=True", "cache=False")
        filename = f"<{name}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        sys.modules[name] = module
        try:
            exec(compile(code, filename, "exec"), module.__dict__)  # noqa: S102
        except BaseException:
            del sys.modules[name]
            raise
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(namespace or {})
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
