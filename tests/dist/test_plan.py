"""Tests for cubie_dist.plan: memory budget, coverage, balance, laziness."""

from __future__ import annotations

import math
import random
import time
import tracemalloc
from decimal import Decimal

import numpy as np
import pytest

from cubie_dist.plan import Chunk, Plan, plan_chunks


def _sizes(plan: Plan) -> list[int]:
    return [chunk.n_runs for chunk in plan]


def _assert_covers(plan: Plan, n_runs: int) -> None:
    """Chunks are contiguous, indexed in order and cover [0, n_runs) exactly."""
    expected_start = 0
    for j, chunk in enumerate(plan):
        assert chunk.index == j
        assert chunk.start == expected_start
        assert chunk.stop > chunk.start
        expected_start = chunk.stop
    assert expected_start == n_runs


# ---------------------------------------------------------------- numbers by hand
def test_balance_sets_count_when_budget_is_ample():
    # budget 0.8 * 10_000 = 8_000 B fits 800 runs; 4 chunks/worker x 1 worker
    plan = plan_chunks(1000, 10, [10_000])
    assert plan.budget_bytes == 8_000
    assert len(plan) == 4 and _sizes(plan) == [250] * 4
    assert plan.chunk_runs == 250 and plan.chunk_bytes == 2_500
    assert plan.limited_by == "balance"


def test_budget_sets_count_when_tight():
    # budget 0.8 * 2_000 = 1_600 B -> 160 runs -> ceil(1000 / 160) = 7 chunks
    plan = plan_chunks(1000, 10, [2_000])
    assert plan.budget_bytes == 1_600
    assert len(plan) == 7
    assert _sizes(plan) == [143] * 6 + [142]
    assert plan.chunk_bytes == 1_430 <= plan.budget_bytes
    assert plan.limited_by == "budget"


def test_more_workers_more_chunks():
    plan = plan_chunks(1000, 10, [10_000] * 3)
    assert plan.n_workers == 3
    assert len(plan) == 12
    assert _sizes(plan) == [84] * 4 + [83] * 8


def test_smallest_worker_binds():
    # budgets 10_000 and 1_000 -> 0.8 * 1_000 = 800 B -> 80 runs -> 13 chunks
    plan = plan_chunks(1000, 10, [10_000, 1_000])
    assert plan.budget_bytes == 800
    assert plan.chunk_runs == 77  # ceil(1000 / 13)
    assert len(plan) == 13


def test_per_run_bytes_scales_chunk_count():
    small = plan_chunks(10**6, 100, [10**8])   # 800_000 runs fit -> balance: 4
    large = plan_chunks(10**6, 1_000, [10**8])  # 80_000 runs fit -> 13 chunks
    assert len(small) == 4
    assert len(large) == 13 and large.chunk_runs == 76_924
    assert large.chunk_bytes <= large.budget_bytes


def test_safety_scales_budget():
    assert plan_chunks(100, 1, [1000], safety=0.5).budget_bytes == 500
    assert plan_chunks(100, 1, [1000], safety=1.0).budget_bytes == 1000
    assert plan_chunks(100, 1, [360], safety=0.95).budget_bytes == 342  # not 341.99..
    assert plan_chunks(100, 1, [10**12 + 1], safety=0.5).budget_bytes == 5 * 10**11
    # 0.1 * 1000 = 100 bytes -> 100 runs of 2 bytes need 2 chunks of 50
    plan = plan_chunks(100, 2, [1000], safety=0.1, chunks_per_worker=1)
    assert _sizes(plan) == [50, 50]


def test_min_chunk_runs_beats_balance():
    # 16 chunks wanted, but chunks of >= 400 runs allow only 2
    plan = plan_chunks(1000, 1, [10**9] * 4, min_chunk_runs=400)
    assert _sizes(plan) == [500, 500]
    assert plan.limited_by == "min_chunk_runs"


def test_budget_beats_min_chunk_runs():
    # budget fits 100 runs < min_chunk_runs 400: the budget wins
    plan = plan_chunks(1000, 10, [1_250], min_chunk_runs=400)
    assert plan.budget_bytes == 1_000
    assert _sizes(plan) == [100] * 10
    assert plan.limited_by == "budget"


def test_short_sweep_is_one_chunk_below_min_chunk_runs():
    plan = plan_chunks(100, 1, [10**9] * 8, min_chunk_runs=256)
    assert _sizes(plan) == [100]


def test_fewer_runs_than_wanted_chunks():
    plan = plan_chunks(3, 1, [10**9] * 4)
    assert _sizes(plan) == [1, 1, 1]


def test_max_chunk_runs_caps_and_beats_min():
    plan = plan_chunks(1000, 1, [10**9], max_chunk_runs=100, min_chunk_runs=300)
    assert _sizes(plan) == [100] * 10
    assert plan.limited_by == "max_chunk_runs"
    assert len(plan_chunks(1000, 1, [10**9], max_chunk_runs=10**6)) == 4


def test_impossible_budget_names_the_numbers():
    with pytest.raises(ValueError) as info:
        plan_chunks(10, 1_000, [1_000, 5_000])
    message = str(info.value)
    assert "per_run_bytes=1000" in message
    assert "800 bytes" in message
    assert "1000 bytes" in message


# ---------------------------------------------------------------- properties
def test_random_plans_respect_every_rule():
    rng = random.Random(20261107)
    checked = 0
    for _ in range(600):
        n_runs = int(10 ** rng.uniform(0, 7))
        per_run = int(10 ** rng.uniform(0, 6))
        budgets = [int(10 ** rng.uniform(2, 10)) for _ in range(rng.randint(1, 8))]
        min_runs = int(10 ** rng.uniform(0, 4))
        per_worker = rng.randint(1, 8)
        safety = rng.choice([0.5, 0.8, 0.95, 1.0])
        budget = math.floor(Decimal(str(safety)) * min(budgets))
        fit = budget // per_run
        kwargs = dict(min_chunk_runs=min_runs, chunks_per_worker=per_worker, safety=safety)
        if fit < 1:
            with pytest.raises(ValueError, match="per_run_bytes"):
                plan_chunks(n_runs, per_run, budgets, **kwargs)
            continue
        plan = plan_chunks(n_runs, per_run, budgets, **kwargs)
        checked += 1
        assert plan.budget_bytes == budget
        assert plan.n_runs == n_runs and plan.n_workers == len(budgets)
        # memory: no chunk exceeds the budget
        assert plan.chunk_bytes <= budget
        assert plan.chunk_runs * per_run <= budget
        # coverage and balance (checked by arithmetic on a sample of chunks)
        chunks = plan.chunks
        assert chunks[0].start == 0 and chunks[-1].stop == n_runs
        sizes = [chunks[j].n_runs for j in {0, len(chunks) // 2, len(chunks) - 1}]
        assert max(sizes) - min(sizes) <= 1 and max(sizes) == plan.chunk_runs
        for j in rng.sample(range(len(chunks)), min(5, len(chunks) - 1)):
            if j + 1 < len(chunks):
                assert chunks[j].stop == chunks[j + 1].start
        if len(chunks) <= 2000:
            _assert_covers(plan, n_runs)
        # largest possible chunks: one chunk fewer would break a rule
        if len(plan) > 1:
            fewer = len(plan) - 1
            fewer_max = -(-n_runs // fewer)
            fewer_min = n_runs // fewer
            breaks_budget = fewer_max > fit
            breaks_balance = fewer < per_worker * len(budgets) and fewer_min >= min_runs
            assert breaks_budget or breaks_balance
        # balance when memory and min_chunk_runs allow
        if n_runs // min_runs >= per_worker * len(budgets) and fit >= n_runs / (
            per_worker * len(budgets)
        ):
            assert len(plan) >= per_worker * len(budgets)
        # device fill: smallest chunk >= min_chunk_runs when the budget allows
        if fit >= 2 * min_runs - 1 and n_runs >= min_runs:
            assert n_runs // len(plan) >= min_runs
    assert checked > 300


def test_chunk_sequence_behaves_like_a_sequence():
    plan = plan_chunks(10, 1, [100], chunks_per_worker=3)
    chunks = plan.chunks
    assert len(chunks) == 3
    assert list(chunks) == [Chunk(0, 0, 4), Chunk(1, 4, 7), Chunk(2, 7, 10)]
    assert chunks[-1] == chunks[2] == plan[2]
    assert chunks[1:] == [Chunk(1, 4, 7), Chunk(2, 7, 10)]
    assert chunks[1].slice == slice(4, 7)
    assert np.arange(10)[chunks[1].slice].tolist() == [4, 5, 6]
    assert Chunk(2, 7, 10) in chunks
    with pytest.raises(IndexError):
        chunks[3]
    with pytest.raises(IndexError):
        chunks[-4]
    assert list(plan) == list(chunks)


def test_plan_is_frozen_and_comparable():
    plan = plan_chunks(1000, 10, [10_000])
    assert plan == plan_chunks(1000, 10, [10_000])
    with pytest.raises(AttributeError):
        plan.n_chunks = 5


def test_billion_run_plan_is_instant_and_short():
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        plan = plan_chunks(10**9, 10**6, [10**9] * 4)  # 800 runs per chunk
        text = repr(plan)
        last = plan.chunks[-1]
        middle = plan.chunks[len(plan) // 2]
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan) == 1_250_000
    assert last == Chunk(1_249_999, 999_999_200, 10**9)
    assert middle == Chunk(625_000, 500_000_000, 500_000_800)
    assert elapsed < 0.1
    assert peak < 2**20
    lines = text.splitlines()
    assert len(lines) < 30
    assert "1,000,000,000 runs" in lines[0] and "1,250,000 chunks" in lines[0]
    assert "999,999,200" in text


def test_repr_lists_small_plans_fully():
    text = repr(plan_chunks(1000, 10, [2_000]))
    lines = text.splitlines()
    assert len(lines) == 2 + 7
    assert "142" in lines[-1] and "1,000" in lines[-1]


# ---------------------------------------------------------------- bad arguments
BAD_ARGUMENTS = [
    (dict(n_runs=0), ValueError, ["n_runs", "0"]),
    (dict(n_runs=10.0), TypeError, ["n_runs", "10.0"]),
    (dict(n_runs=True), TypeError, ["n_runs", "bool"]),
    (dict(per_run_bytes=0), ValueError, ["per_run_bytes", "0"]),
    (dict(per_run_bytes=-3), ValueError, ["per_run_bytes", "-3"]),
    (dict(worker_budgets=[]), ValueError, ["worker_budgets", "empty"]),
    (dict(worker_budgets=10**9), TypeError, ["worker_budgets", "list"]),
    (dict(worker_budgets={"tcp://a": 10**9}), TypeError, ["worker_budgets", "values()"]),
    (dict(worker_budgets=[10**9, 0]), ValueError, ["worker_budgets[1]", "0"]),
    (dict(worker_budgets=[1.5e9]), TypeError, ["worker_budgets[0]", "1500000000.0"]),
    (dict(min_chunk_runs=0), ValueError, ["min_chunk_runs", "0"]),
    (dict(chunks_per_worker=0), ValueError, ["chunks_per_worker", "0"]),
    (dict(max_chunk_runs=0), ValueError, ["max_chunk_runs", "0"]),
    (dict(safety=0.0), ValueError, ["safety", "(0, 1]"]),
    (dict(safety=1.5), ValueError, ["safety", "1.5"]),
    (dict(safety=float("nan")), ValueError, ["safety", "nan"]),
    (dict(safety="0.8"), TypeError, ["safety", "'0.8'"]),
]


@pytest.mark.parametrize("override, error, fragments", BAD_ARGUMENTS)
def test_bad_arguments_name_the_field(override, error, fragments):
    kwargs = dict(n_runs=100, per_run_bytes=10, worker_budgets=[10**6])
    kwargs.update(override)
    with pytest.raises(error) as info:
        plan_chunks(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_numpy_integers_accepted():
    plan = plan_chunks(np.int64(1000), np.int32(10), np.array([10_000, 20_000]))
    assert plan.n_runs == 1000 and plan.budget_bytes == 8_000
