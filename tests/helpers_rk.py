"""Butcher rooted trees and Runge-Kutta order conditions, generated, not typed.

A rooted tree is a sorted tuple of its root's subtrees; the single node is
``()``. A Runge-Kutta method with weights ``w`` has order ``p`` when, for every
tree ``t`` with at most ``p`` nodes,

    Phi(t) = sum_i w_i g_i(t) = 1 / gamma(t),

where the stage vector of a tree is the product over the root's subtrees,
``g_i(t) = prod_k (sum_j a_ij g_j(t_k))`` (all ones for the single node), and
the density is ``gamma(t) = |t| * prod_k gamma(t_k)`` (Butcher, *Numerical
Methods for Ordinary Differential Equations*, Ch. 3).

All arithmetic is generic: Fractions stay exact, floats stay floats.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from math import factorial

Tree = tuple

#: OEIS A000081: number of rooted trees with n nodes, n = 1..10.
TREE_COUNTS = (1, 1, 2, 4, 9, 20, 48, 115, 286, 719)


def _canonical(children) -> Tree:
    return tuple(sorted(children))


def _grafts(tree: Tree) -> set:
    """Every tree obtained by attaching one new leaf to one node of ``tree``."""
    out = {_canonical(tree + ((),))}
    for k, child in enumerate(tree):
        for grown in _grafts(child):
            out.add(_canonical(tree[:k] + (grown,) + tree[k + 1 :]))
    return out


@lru_cache(maxsize=None)
def rooted_trees(n: int) -> tuple:
    """All rooted trees with exactly ``n`` nodes, in a fixed order."""
    if n < 1:
        raise ValueError("a rooted tree has at least one node")
    if n == 1:
        return ((),)
    grown = set()
    for tree in rooted_trees(n - 1):
        grown |= _grafts(tree)
    return tuple(sorted(grown))


def tree_order(tree: Tree) -> int:
    return 1 + sum(tree_order(child) for child in tree)


def density(tree: Tree) -> int:
    """gamma(t): ``|t|`` times the densities of the root's subtrees."""
    out = tree_order(tree)
    for child in tree:
        out *= density(child)
    return out


def symmetry(tree: Tree) -> int:
    """sigma(t): the order of the tree's automorphism group."""
    out = 1
    for child in set(tree):
        m = tree.count(child)
        out *= factorial(m) * symmetry(child) ** m
    return out


class OrderConditions:
    """Elementary weights of one tableau's ``a`` matrix, memoised per tree.

    ``a`` is the strictly lower triangle as ragged rows (exact Fractions or
    floats); stage vectors of trees are shared by every weight vector.
    """

    def __init__(self, a, one=Fraction(1)):
        self.a = [list(row) for row in a]
        self.s = len(self.a)
        self.one = one
        self._stage = {}

    def stage_vector(self, tree: Tree) -> list:
        if tree not in self._stage:
            vec = [self.one] * self.s
            for child in tree:
                g = self.stage_vector(child)
                ag = [
                    sum((aij * gj for aij, gj in zip(row, g)), 0 * self.one)
                    for row in self.a
                ]
                vec = [v * x for v, x in zip(vec, ag)]
            self._stage[tree] = vec
        return self._stage[tree]

    def elementary_weight(self, weights, tree: Tree):
        return sum((w * g for w, g in zip(weights, self.stage_vector(tree))), 0 * self.one)

    def residuals(self, weights, order: int) -> list:
        """``Phi(t) - 1/gamma(t)`` for every tree with exactly ``order`` nodes."""
        return [
            self.elementary_weight(weights, t) - self.one / density(t)
            for t in rooted_trees(order)
        ]

    def max_residual(self, weights, order: int):
        """Largest absolute residual over the trees with exactly ``order`` nodes."""
        return max(abs(r) for r in self.residuals(weights, order))

