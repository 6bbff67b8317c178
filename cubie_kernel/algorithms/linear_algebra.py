"""Dense per-run linear algebra for implicit steps: LU with partial pivoting.

Each run factors its own small ``n x n`` matrix (``n`` the number of
states) and solves with it, in the lane form of :mod:`cubie_kernel.targets`
(element ``(r, c)`` of lane ``j`` at ``(r * n + c) * L + j``). The
functions are plain Python closures over ``n`` and ``L``, compiled by the
target as device functions; they work on one lane at a time (pivoting
differs between runs, so lanes do not run in lockstep here).

Cost per run: ``n^3 / 3`` multiply-adds per factorisation, ``n^2`` per
solve, ``n^2 + n`` elements of memory for the factors and the pivots (the
pivots are stored as small integers in the run's precision, exact in
float32 below 2**24). Beyond a few tens of states, dense per-thread LU
stops fitting a GPU thread's registers and local memory (see the docs of
:mod:`cubie_kernel.algorithms.rosenbrock_step`).
"""

from __future__ import annotations

import numpy as np


def build_lu(n: int, lanes: int, precision):
    """``(factor, solve)`` for ``n x n`` lane-form matrices.

    ``factor(matrix, pivots, j)``
        Factors lane ``j`` of ``matrix`` in place into ``L U`` (unit lower
        ``L`` below the diagonal, ``U`` on and above it) with row pivoting;
        ``pivots[k * L + j]`` is the row swapped with row ``k``. Returns 0,
        or 1 when a pivot is zero or not finite (singular matrix, or a
        non-finite Jacobian).
    ``solve(matrix, pivots, rhs, offset, j)``
        Overwrites the vector at ``rhs[(offset + r) * L + j]``, ``r < n``,
        with the solution of ``A x = rhs``, ``A`` the matrix factored by
        ``factor``.
    """
    L = int(lanes)
    zero = np.dtype(precision).type(0.0)
    one = np.dtype(precision).type(1.0)
    to_pivot = np.dtype(precision).type

    def factor(matrix, pivots, j):
        for k in range(n):
            pivot = k
            largest = abs(matrix[(k * n + k) * L + j])
            for r in range(k + 1, n):
                value = abs(matrix[(r * n + k) * L + j])
                if value > largest:
                    largest = value
                    pivot = r
            pivots[k * L + j] = to_pivot(pivot)
            if not (largest > zero and largest < np.inf):
                return 1
            if pivot != k:
                for c in range(n):
                    kept = matrix[(k * n + c) * L + j]
                    matrix[(k * n + c) * L + j] = matrix[(pivot * n + c) * L + j]
                    matrix[(pivot * n + c) * L + j] = kept
            inverse = one / matrix[(k * n + k) * L + j]
            for r in range(k + 1, n):
                multiplier = matrix[(r * n + k) * L + j] * inverse
                matrix[(r * n + k) * L + j] = multiplier
                if multiplier != zero:
                    for c in range(k + 1, n):
                        matrix[(r * n + c) * L + j] -= multiplier * matrix[(k * n + c) * L + j]
        return 0

    def solve(matrix, pivots, rhs, offset, j):
        for k in range(n):  # the row swaps, in factorisation order
            pivot = int(pivots[k * L + j])
            if pivot != k:
                kept = rhs[(offset + k) * L + j]
                rhs[(offset + k) * L + j] = rhs[(offset + pivot) * L + j]
                rhs[(offset + pivot) * L + j] = kept
        for r in range(n):  # L y = b (unit diagonal)
            total = rhs[(offset + r) * L + j]
            for c in range(r):
                total -= matrix[(r * n + c) * L + j] * rhs[(offset + c) * L + j]
            rhs[(offset + r) * L + j] = total
        for r in range(n - 1, -1, -1):  # U x = y
            total = rhs[(offset + r) * L + j]
            for c in range(r + 1, n):
                total -= matrix[(r * n + c) * L + j] * rhs[(offset + c) * L + j]
            rhs[(offset + r) * L + j] = total / matrix[(r * n + r) * L + j]

    return factor, solve


def build_block_solve(n: int, lanes: int, precision):
    """``solve_block(matrix, pivots, rhs, offset)``: :func:`build_lu`'s solve for
    every lane of the block at once.

    The row swaps differ per lane (a short scalar loop per lane); the two
    triangular sweeps are the same for every lane, so their innermost loop
    runs over the lanes and vectorises on the cpu target (``L = 1`` on cuda:
    the same arithmetic as ``solve``). Every lane's ``pivots`` must hold row
    indices below ``n`` (a lane that was not factored: the identity).
    """
    L = int(lanes)

    def solve_block(matrix, pivots, rhs, offset):
        for j in range(L):
            for k in range(n):
                pivot = int(pivots[k * L + j])
                if pivot != k:
                    kept = rhs[(offset + k) * L + j]
                    rhs[(offset + k) * L + j] = rhs[(offset + pivot) * L + j]
                    rhs[(offset + pivot) * L + j] = kept
        for r in range(n):
            for c in range(r):
                for j in range(L):
                    rhs[(offset + r) * L + j] -= (matrix[(r * n + c) * L + j]
                                                  * rhs[(offset + c) * L + j])
        for r in range(n - 1, -1, -1):
            for c in range(r + 1, n):
                for j in range(L):
                    rhs[(offset + r) * L + j] -= (matrix[(r * n + c) * L + j]
                                                  * rhs[(offset + c) * L + j])
            for j in range(L):
                rhs[(offset + r) * L + j] = rhs[(offset + r) * L + j] / matrix[(r * n + r) * L + j]

    return solve_block
