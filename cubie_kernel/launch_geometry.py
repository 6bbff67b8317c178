"""Launch geometry of the cuda batch kernel (plain host arithmetic).

Assumptions: one thread per run, a 1-D grid of 1-D blocks, the kernel
bounds-checks ``run < n_runs`` first, and each thread's shared scratch is
a contiguous slice of the block's dynamic shared memory starting at
``thread * stride``.
"""

from __future__ import annotations

import attrs

#: Threads per block before shared memory forces fewer.
DEFAULT_THREADS_PER_BLOCK = 128
WARP_SIZE = 32


def needs_padding(shared_elements: int) -> bool:
    """Whether per-thread shared slices need one element of padding.

    Threads of a warp access the same offset of their own slices. With an
    even stride (in elements, for 4-byte and 8-byte types alike) two
    threads of a warp map to the same bank; an odd stride spreads them over
    all banks. So pad by one element exactly when the size is even and > 0.
    """
    return shared_elements > 0 and shared_elements % 2 == 0


def shared_stride(shared_elements: int) -> int:
    """Elements between consecutive threads' slices."""
    return shared_elements + (1 if needs_padding(shared_elements) else 0)


@attrs.frozen
class LaunchGeometry:
    threads_per_block: int
    blocks: int
    shared_bytes_per_block: int


def launch_geometry(
    n_runs: int,
    shared_elements: int,
    itemsize: int,
    max_shared_per_block: int,
    threads_per_block: int = DEFAULT_THREADS_PER_BLOCK,
) -> LaunchGeometry:
    """Blocks, threads and dynamic shared bytes for ``n_runs`` runs.

    The block shrinks (halving) while its shared memory would exceed
    ``max_shared_per_block``. A run whose own shared slice does not fit
    raises ValueError.
    """
    per_thread = shared_stride(shared_elements) * itemsize
    if per_thread > max_shared_per_block:
        raise ValueError(
            f"one run needs {per_thread} bytes of shared memory but a block may use at "
            f"most {max_shared_per_block}; move buffers to local memory "
            "(e.g. update({'<buffer>_location': 'local'}))"
        )
    tpb = threads_per_block
    while tpb > 1 and tpb * per_thread > max_shared_per_block:
        tpb //= 2
    blocks = max(1, -(-n_runs // tpb))
    return LaunchGeometry(tpb, blocks, tpb * per_thread)
