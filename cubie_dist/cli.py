"""The ``cubie-dist`` command line: run a sweep file, plan it, or show a job script.

::

    cubie-dist run SWEEP.yaml [--cluster CONFIG.yaml] [--output OUT.zarr|OUT.nc] [--overwrite]
                              [--write-on workers|client] [--no-progress]
    cubie-dist plan SWEEP.yaml [--cluster CONFIG.yaml]
    cubie-dist show RESULT [--plot VAR [--sel DIM=VALUE ...] [--axes DIM [DIM]] [--png PATH]]
    cubie-dist job-script --cluster CONFIG.yaml

Without ``--cluster`` the embedded default cluster is used: one dask worker
per GPU (dask-cuda) where GPUs are visible, else one cpu worker per core.

A ``.zarr`` output is a store the workers write into chunk by chunk:
interrupted (Ctrl-C, a killed client, a walltime), the same command resumes
it and computes only the chunks not yet written. A ``.nc`` output is
assembled in the client's memory first (refused up front when too large).

Exit status: 0 on success; 2 for a bad file, value or option, a store of a
different sweep, or a result too large for memory (one line on stderr);
3 when the cluster cannot be started or reached; 1 when the sweep itself
fails (a chunk that raised after its retries).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CLUSTER = 0, 1, 2, 3


class CLIError(Exception):
    """An error reported as one line with an exit status."""

    def __init__(self, message: str, status: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.status = status


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cubie-dist")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cubie-dist",
        description="Run sweeps of ODE runs on every GPU (or CPU) a dask cluster offers.",
        epilog="Exit status: 0 success, 1 sweep failed, 2 bad input, 3 cluster unreachable.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cluster_help = (
        "cluster config YAML (see cluster_configs/); default: the embedded local cluster "
        "(dask-cuda workers on GPUs, else cpu workers)"
    )
    run = commands.add_parser(
        "run", help="run a sweep file and write the merged Dataset",
        description="Plan a sweep file, run it on a cluster, write the merged Dataset.",
    )
    run.add_argument("sweep_file", metavar="SWEEP.yaml", help="sweep file (see examples/)")
    run.add_argument("--cluster", metavar="CONFIG.yaml", help=cluster_help)
    run.add_argument(
        "--output", metavar="PATH",
        help="where to write the result: a .zarr store (written by the workers as chunks "
        "finish; the same command resumes it) or a .nc file (assembled in memory first); "
        "default: the sweep file's 'output' key, else <sweep file name>.zarr next to it",
    )
    run.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing .zarr store that holds a different sweep (without it, "
        "such a store is refused; one of the same sweep is resumed)",
    )
    run.add_argument(
        "--write-on", choices=("workers", "client"), default="workers",
        help="who writes a .zarr store: the workers (default; the path must be on a "
        "filesystem every worker mounts) or this client (results travel back first)",
    )
    run.add_argument("--no-progress", action="store_true", help="do not show a progress bar")

    plan = commands.add_parser(
        "plan", help="show the chunk plan of a sweep file without running it",
        description="Start (or reach) the cluster, ask its workers for memory, print the plan.",
    )
    plan.add_argument("sweep_file", metavar="SWEEP.yaml", help="sweep file (see examples/)")
    plan.add_argument("--cluster", metavar="CONFIG.yaml", help=cluster_help)

    show = commands.add_parser(
        "show", help="summarise a result (dims, variables, status, timing); --plot draws one",
        description="Print what a result holds; with --plot VAR write a PNG of VAR over one "
        "or two sweep axes, beside a map of the runs' status (needs matplotlib).",
    )
    show.add_argument("result", metavar="RESULT", help="a .zarr store or .nc file written by run")
    show.add_argument("--plot", metavar="VAR", help="variable to draw, e.g. x")
    show.add_argument(
        "--sel", metavar="DIM=VALUE", action="append", default=[],
        help="selection before drawing: an int indexes (time=-1, the default), a float "
        "picks the nearest value (sigma=10.0); repeatable",
    )
    show.add_argument("--axes", metavar="DIM", nargs="+", help="one or two sweep dims to draw "
                      "against (default: the two longest left)")
    show.add_argument("--png", metavar="PATH", help="where to write the PNG (default: "
                      "<RESULT without suffix>_<VAR>.png)")

    script = commands.add_parser(
        "job-script", help="print the batch script a SLURM cluster config would submit",
        description="Print the job script dask-jobqueue would submit, without submitting it.",
    )
    script.add_argument("--cluster", metavar="CONFIG.yaml", required=True,
                        help="a SLURM cluster config (e.g. cluster_configs/slurm-gpu.yaml)")
    return parser


def _load_job(path: str):
    from cubie_dist.sweep_file import load_sweep_file

    try:
        return load_sweep_file(path)
    except FileNotFoundError:
        raise CLIError(f"{path}: no such sweep file") from None
    except (ValueError, TypeError, KeyError) as error:
        raise CLIError(f"{path}: {error}") from None


@contextlib.contextmanager
def _client(cluster_config: str | None) -> Iterator:
    """A distributed Client on the configured cluster, or the embedded default."""
    from distributed import Client

    if cluster_config is None:
        from cubie_dist.local import local_client

        try:
            manager = local_client()
            client = manager.__enter__()
        except Exception as error:  # noqa: BLE001 - reported as one line
            raise CLIError(f"cannot start the local cluster: {error}", EXIT_CLUSTER) from None
        try:
            yield client
        finally:
            manager.__exit__(None, None, None)
        return
    from cubie_dist import cluster as clusters

    if not Path(cluster_config).exists():
        raise CLIError(f"{cluster_config}: no such cluster config")
    try:
        config = clusters.load_config(cluster_config)
    except (ValueError, TypeError, KeyError) as error:
        raise CLIError(f"{cluster_config}: {error}") from None
    try:
        cluster = clusters.from_config(config)
    except Exception as error:  # noqa: BLE001
        raise CLIError(f"{cluster_config}: cannot start the cluster: {error}", EXIT_CLUSTER) from None
    try:
        with Client(cluster) as client:
            _wait_for_workers(client, config, cluster_config)
            yield client
    except OSError as error:
        raise CLIError(f"{cluster_config}: cannot reach the cluster: {error}", EXIT_CLUSTER) from None
    finally:
        cluster.close()


#: Seconds to wait for batch-scheduled workers (SLURM jobs) to join.
WORKER_WAIT_S = 600


def _wait_for_workers(client, config, source: str) -> None:
    """Batch-scheduled clusters only submit jobs: wait until workers join.

    Waits for the configured fixed scale (jobs x worker processes per job),
    or one worker for an adaptive cluster.
    """
    if config.kind != "slurm":
        return
    jobs = config.scale.get("jobs") or 1
    processes = config.cluster.get("processes") or 1
    expected = jobs * processes if config.scale.get("jobs") else 1
    try:
        client.wait_for_workers(expected, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise CLIError(
            f"{source}: no {expected} worker(s) joined within {WORKER_WAIT_S} s "
            "(are the jobs queued? see squeue)", EXIT_CLUSTER,
        ) from None


def _output_path(job, args) -> str:
    """The output path (``--output``, else the sweep file's, else next to it); its
    folder must exist: nothing is created behind the user's back."""
    from cubie_dist.sweep_file import check_output_path

    if args.output:
        try:
            path = check_output_path(args.output)
        except ValueError as error:
            message = str(error).removeprefix("output: ")
            raise CLIError(f"--output: {message}") from None
        where = "--output"
    elif job.output:
        path, where = str(Path(args.sweep_file).parent / job.output), f"{args.sweep_file}: output"
    else:
        path, where = str(Path(args.sweep_file).with_suffix(".zarr")), "output"
    folder = Path(path).expanduser().absolute().parent
    if not folder.is_dir():
        raise CLIError(f"{where}: folder {folder} does not exist; create it first")
    return path


def write_dataset(ds, path: str) -> None:
    """Write an in-memory result to a ``.nc`` file."""
    try:
        ds.to_netcdf(path)
    except ValueError as error:  # no netCDF engine installed
        raise CLIError(f"cannot write {path}: {error}; write a .zarr store instead") from None


def command_run(args) -> int:
    import cubie_dist as cd
    from cubie_dist.chunks import plural
    from cubie_dist.run import prepare_sweep

    job = _load_job(args.sweep_file)
    output = _output_path(job, args)
    store = output if output.endswith(".zarr") else None
    options = dict(store=store, overwrite=args.overwrite, write_on=args.write_on)
    try:  # every check that needs no cluster, before one starts
        prepare_sweep(job.spec, job.sweep, **job.run_kwargs(), **options)
    except (cd.ResultTooLargeError, cd.StoreMismatchError) as error:
        raise CLIError(str(error)) from None
    with _client(args.cluster) as client:
        start = time.perf_counter()
        try:
            ds = cd.run_sweep(
                job.spec, job.sweep, client=client, progress=not args.no_progress,
                report=print, **job.run_kwargs(), **options,
            )
        except cd.ChunkFailedError as error:
            raise CLIError(f"sweep failed: {error}", EXIT_FAILED) from None
        except cd.StoreUnreachableError as error:
            raise CLIError(f"{error} (--write-on client)", EXIT_CLUSTER) from None
        elapsed = time.perf_counter() - start
        import numpy as np

        from cubie_kernel.status import FAILURE_MASK

        if store is None:
            write_dataset(ds, output)
            failed = int(np.count_nonzero(ds["status"].values & FAILURE_MASK))
        else:  # the store's summary: nothing of size n_runs is read
            counts = json.loads(ds.attrs["status_counts"])
            failed = sum(int(n) for v, n in counts.items() if int(v) & FAILURE_MASK)
    print(
        f"{plural(job.sweep.n_runs, 'run')} in {elapsed:.1f} s on "
        f"{plural(int(ds.attrs['plan_n_chunks']), 'chunk')}; "
        f"{plural(failed, 'run')} with a failure status"
    )
    print(f"wrote {output}")
    return EXIT_OK


def command_plan(args) -> int:
    import cubie_dist as cd

    job = _load_job(args.sweep_file)
    with _client(args.cluster) as client:
        print(cd.plan(job.spec, job.sweep, job.duration, client))
    return EXIT_OK


def command_job_script(args) -> int:
    from cubie_dist import cluster as clusters

    if not Path(args.cluster).exists():
        raise CLIError(f"{args.cluster}: no such cluster config")
    try:
        print(clusters.job_script(args.cluster))
    except (ValueError, TypeError, KeyError) as error:
        raise CLIError(f"{args.cluster}: {error}") from None
    return EXIT_OK


def command_show(args) -> int:
    from cubie_dist import show

    try:
        ds = show.open_result(args.result)
    except FileNotFoundError as error:
        raise CLIError(str(error)) from None
    except (ValueError, OSError) as error:
        raise CLIError(f"{args.result}: cannot open: {error}") from None
    print(show.summary(ds))
    if args.plot is None:
        if args.sel or args.axes or args.png:
            raise CLIError("--sel, --axes and --png need --plot VAR")
        return EXIT_OK
    png = args.png or f"{Path(args.result).with_suffix('')}_{args.plot}.png"
    if not Path(png).expanduser().absolute().parent.is_dir():
        raise CLIError(f"--png: folder {Path(png).parent} does not exist")
    try:
        axes = show.plot(ds, args.plot, png, show.parse_selection(args.sel), args.axes)
    except show.PlotUnavailableError as error:
        raise CLIError(str(error)) from None
    except (KeyError, ValueError) as error:
        raise CLIError(str(error.args[0] if error.args else error)) from None
    print(f"wrote {png} ({args.plot} over {', '.join(axes)})")
    return EXIT_OK


COMMANDS = {
    "run": command_run, "plan": command_plan, "show": command_show,
    "job-script": command_job_script,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cubie-dist``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CLIError as error:
        print(f"cubie-dist: error: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt:
        print("cubie-dist: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
