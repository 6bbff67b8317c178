"""Tests for cubie_dist.chunks: memory budget, regular aligned blocks, coverage, laziness."""

from __future__ import annotations

import math
import random
import time
import tracemalloc
from decimal import Decimal

import numpy as np
import pytest

from cubie_dist.chunks import Chunk, Plan, align, format_bytes, plan_chunks


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


def _assert_blocks_are_run_ranges(plan: Plan) -> None:
    """Every chunk's block of the run array holds exactly its runs, in C order;
    no run is in two blocks and every run is in one."""
    flat = np.arange(plan.n_runs).reshape(plan.shape)
    owner = np.full(plan.shape, -1, dtype=np.int64)
    for chunk in plan:
        block = plan.chunks.block(chunk)
        assert len(block) == len(plan.shape)
        np.testing.assert_array_equal(
            flat[block].ravel(), np.arange(chunk.start, chunk.stop), err_msg=str(chunk)
        )
        assert (owner[block] == -1).all(), f"chunk {chunk.index} overlaps another"
        owner[block] = chunk.index
        block_shape = tuple(s.stop - s.start for s in block)
        assert math.prod(block_shape) == chunk.n_runs
        # every block fits in the plan's Zarr chunk shape
        assert all(b <= full for b, full in zip(block_shape, plan.block_shape))
    assert (owner >= 0).all(), "some runs are in no chunk"
    # owners increase in run order: chunk j holds a contiguous run range
    assert (np.diff(owner.ravel()) >= 0).all()


# ---------------------------------------------------------------- numbers by hand
def test_balance_sets_size_when_budget_is_ample():
    # budget 0.8 * 10_000 = 8_000 B fits 800 runs; 4 chunks/worker x 1 worker
    # -> ceil(1000 / 4) = 250 runs per chunk
    plan = plan_chunks(1000, 10, [10_000])
    assert plan.budget_bytes == 8_000
    assert len(plan) == 4 and _sizes(plan) == [250] * 4
    assert plan.chunk_runs == 250 and plan.chunk_bytes == 2_500
    assert plan.limited_by == "balance"
    assert plan.shape == (1000,) and plan.split_axis == 0 and plan.split_size == 250
    assert plan.block_shape == (250,)


def test_budget_sets_size_when_tight():
    # budget 0.8 * 2_000 = 1_600 B -> 160 runs < 250 balanced -> 6 x 160 + 40
    plan = plan_chunks(1000, 10, [2_000])
    assert plan.budget_bytes == 1_600
    assert len(plan) == 7
    assert _sizes(plan) == [160] * 6 + [40]
    assert plan.chunk_runs == 160
    assert plan.chunk_bytes == 1_600 <= plan.budget_bytes
    assert plan.limited_by == "budget"


def test_more_workers_more_chunks():
    # 4 x 3 = 12 wanted -> ceil(1000 / 12) = 84 runs; 11 x 84 = 924, last 76
    plan = plan_chunks(1000, 10, [10_000] * 3)
    assert plan.n_workers == 3
    assert len(plan) == 12
    assert _sizes(plan) == [84] * 11 + [76]
    assert plan.limited_by == "balance"


def test_smallest_worker_binds():
    # budgets 10_000 and 1_000 -> 0.8 * 1_000 = 800 B -> 80 runs (balance: 125)
    # -> 12 x 80 = 960, last 40
    plan = plan_chunks(1000, 10, [10_000, 1_000])
    assert plan.budget_bytes == 800
    assert plan.chunk_runs == 80
    assert len(plan) == 13
    assert _sizes(plan) == [80] * 12 + [40]
    assert plan.limited_by == "budget"


def test_per_run_bytes_scales_chunk_count():
    small = plan_chunks(10**6, 100, [10**8])   # 800_000 runs fit -> balance: 250_000
    large = plan_chunks(10**6, 1_000, [10**8])  # 80_000 runs fit -> 12 x 80_000 + 40_000
    assert len(small) == 4 and small.chunk_runs == 250_000
    assert len(large) == 13 and large.chunk_runs == 80_000
    assert large[-1] == Chunk(12, 960_000, 10**6)
    assert large.chunk_bytes == 8 * 10**7 == large.budget_bytes


def test_safety_scales_budget():
    assert plan_chunks(100, 1, [1000], safety=0.5).budget_bytes == 500
    assert plan_chunks(100, 1, [1000], safety=1.0).budget_bytes == 1000
    assert plan_chunks(100, 1, [360], safety=0.95).budget_bytes == 342  # not 341.99..
    assert plan_chunks(100, 1, [10**12 + 1], safety=0.5).budget_bytes == 5 * 10**11
    # 0.1 * 1000 = 100 bytes -> 100 runs of 2 bytes need 2 chunks of 50
    plan = plan_chunks(100, 2, [1000], safety=0.1, chunks_per_worker=1)
    assert _sizes(plan) == [50, 50]
    assert plan.limited_by == "budget"


def test_min_chunk_runs_beats_balance():
    # 16 chunks wanted (63 runs each), but chunks hold >= 400 runs: 400, 400, 200
    plan = plan_chunks(1000, 1, [10**9] * 4, min_chunk_runs=400)
    assert _sizes(plan) == [400, 400, 200]
    assert plan.chunk_runs == 400
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
    assert plan.chunk_runs == 100 and plan.limited_by == "min_chunk_runs"


def test_fewer_runs_than_wanted_chunks():
    plan = plan_chunks(3, 1, [10**9] * 4)
    assert _sizes(plan) == [1, 1, 1]
    assert plan.limited_by == "balance"


def test_max_chunk_runs_caps_and_beats_min():
    plan = plan_chunks(1000, 1, [10**9], max_chunk_runs=100, min_chunk_runs=300)
    assert _sizes(plan) == [100] * 10
    assert plan.limited_by == "max_chunk_runs"
    # 70 does not divide 1000: 14 x 70 = 980, last 20
    assert _sizes(plan_chunks(1000, 1, [10**9], max_chunk_runs=70)) == [70] * 14 + [20]
    assert len(plan_chunks(1000, 1, [10**9], max_chunk_runs=10**6)) == 4
    # a cap above the budget's fit leaves the budget in charge: 0.8 * 500 = 400 runs
    plan = plan_chunks(1000, 1, [500], max_chunk_runs=450, chunks_per_worker=1)
    assert _sizes(plan) == [400, 400, 200] and plan.limited_by == "budget"
    # a cap equal to the fit: the budget is named
    plan = plan_chunks(1000, 1, [500], max_chunk_runs=400, chunks_per_worker=1)
    assert _sizes(plan) == [400, 400, 200] and plan.limited_by == "budget"


def test_impossible_budget_names_the_numbers():
    with pytest.raises(ValueError) as info:
        plan_chunks(10, 1_000, [1_000, 5_000])
    message = str(info.value)
    assert "per_run_bytes=1000" in message
    assert "800 bytes" in message
    assert "1000 bytes" in message


# ---------------------------------------------------------------- grids, by hand
def test_grid_blocks_split_the_first_axis():
    # (30, 3, 2) with at most 13 runs: the later axes hold 6 runs, so 13 // 6 = 2
    # rows of the first axis per chunk: blocks (2, 3, 2) of 12 runs, 30 / 2 = 15 chunks
    plan = plan_chunks(180, 1, [10**9], shape=(30, 3, 2), max_chunk_runs=13)
    assert plan.shape == (30, 3, 2)
    assert plan.split_axis == 0 and plan.split_size == 2
    assert plan.block_shape == (2, 3, 2) and plan.chunk_runs == 12
    assert len(plan) == 15 and _sizes(plan) == [12] * 15
    assert plan[7] == Chunk(7, 84, 96)
    assert plan.chunks.block(plan[7]) == (slice(14, 16), slice(0, 3), slice(0, 2))
    assert plan.limited_by == "max_chunk_runs"
    _assert_blocks_are_run_ranges(plan)


def test_grid_blocks_split_a_middle_axis():
    # (4, 5, 6) with at most 20 runs: axis 0's tail is 30 > 20, axis 1's is 6:
    # 20 // 6 = 3 of its 5 indices -> blocks (1, 3, 6) = 18 runs, then (1, 2, 6) = 12
    plan = plan_chunks(120, 1, [10**9], shape=(4, 5, 6), max_chunk_runs=20)
    assert plan.split_axis == 1 and plan.split_size == 3
    assert plan.block_shape == (1, 3, 6) and plan.chunk_runs == 18
    assert len(plan) == 8
    assert _sizes(plan) == [18, 12] * 4
    assert [c.start for c in plan] == [0, 18, 30, 48, 60, 78, 90, 108]
    assert plan[-1] == Chunk(7, 108, 120)
    assert plan.chunks.block(plan[5]) == (slice(2, 3), slice(3, 5), slice(0, 6))
    _assert_blocks_are_run_ranges(plan)


def test_grid_blocks_split_the_last_axis():
    # (3, 10) with at most 4 runs: blocks (1, 4); each row is 4 + 4 + 2
    plan = plan_chunks(30, 1, [10**9], shape=(3, 10), max_chunk_runs=4)
    assert plan.split_axis == 1 and plan.split_size == 4 and plan.block_shape == (1, 4)
    assert _sizes(plan) == [4, 4, 2] * 3
    assert plan[4] == Chunk(4, 14, 18)
    assert plan.chunks.block(plan[4]) == (slice(1, 2), slice(4, 8))
    _assert_blocks_are_run_ranges(plan)


def test_grid_whole_sweep_in_one_block():
    # one worker, one chunk wanted: the whole (3, 10) grid is one block
    plan = plan_chunks(30, 1, [10**9], shape=(3, 10), chunks_per_worker=1)
    assert plan.split_axis == 0 and plan.split_size == 3 and plan.block_shape == (3, 10)
    assert list(plan) == [Chunk(0, 0, 30)]
    assert plan.chunks.block(plan[0]) == (slice(0, 3), slice(0, 10))


def test_grid_balance_and_fill_are_aligned_down():
    # (1000, 10), 8 chunks wanted: balance asks 1250 runs -> blocks (125, 10)
    plan = plan_chunks(10_000, 1, [10**9] * 2, shape=(1000, 10))
    assert plan.block_shape == (125, 10) and len(plan) == 8
    assert plan[3] == Chunk(3, 3750, 5000)
    # min_chunk_runs 64 on a (200, 7) grid: 64 // 7 = 9 rows of 7 -> 63 runs,
    # which is below the fill (alignment never exceeds the asked size);
    # 200 = 22 x 9 + 2 -> 23 chunks
    plan = plan_chunks(1400, 1, [10**9] * 2, shape=(200, 7), min_chunk_runs=64,
                       chunks_per_worker=16)  # balance: ceil(1400 / 32) = 44 < 64
    assert plan.limited_by == "min_chunk_runs"
    assert plan.block_shape == (9, 7) and plan.chunk_runs == 63
    assert len(plan) == 23 and plan[-1] == Chunk(22, 1386, 1400)
    _assert_blocks_are_run_ranges(plan)


def test_grid_budget_is_never_exceeded_by_alignment():
    # budget 0.8 * 1000 = 800 B -> 80 runs of 10 B; (50, 3, 3) later axes hold 9:
    # 80 // 9 = 8 -> blocks (8, 3, 3) = 72 runs = 720 B; 50 = 6 x 8 + 2 -> 7 chunks
    plan = plan_chunks(450, 10, [1000], shape=(50, 3, 3))
    assert plan.limited_by == "budget"
    assert plan.block_shape == (8, 3, 3) and plan.chunk_bytes == 720 <= plan.budget_bytes
    assert _sizes(plan) == [72] * 6 + [18]


@pytest.mark.parametrize(
    "shape, max_runs, expected",
    [
        ((10,), 3, (0, 3)),
        ((10,), 50, (0, 10)),
        ((30, 3, 2), 13, (0, 2)),
        ((30, 3, 2), 5, (1, 2)),
        ((30, 3, 2), 6, (0, 1)),
        ((30, 3, 2), 1, (2, 1)),
        ((4, 5, 6), 20, (1, 3)),
        ((1, 7, 1, 5), 12, (1, 2)),
        ((1, 7, 1, 5), 4, (3, 4)),
        ((2, 3), 10**6, (0, 2)),
    ],
)
def test_align_by_hand(shape, max_runs, expected):
    assert align(shape, max_runs) == expected


@pytest.mark.parametrize(
    "shape, max_runs",
    [
        ((30, 3, 2), 13), ((30, 3, 2), 5), ((30, 3, 2), 1), ((30, 3, 2), 180),
        ((4, 5, 6), 20), ((4, 5, 6), 7), ((1, 7, 1, 5), 12), ((1, 7, 1, 5), 4),
        ((2, 1, 3, 1, 4), 5), ((13, 11), 12), ((13, 11), 23), ((5, 5, 5, 5), 37),
        ((97,), 10), ((1,), 1), ((1, 1, 1), 1),
    ],
)
def test_grid_blocks_are_contiguous_disjoint_and_cover(shape, max_runs):
    n_runs = math.prod(shape)
    plan = plan_chunks(n_runs, 1, [10**9], shape=shape, max_chunk_runs=max_runs)
    assert plan.chunk_runs <= max_runs
    _assert_covers(plan, n_runs)
    _assert_blocks_are_run_ranges(plan)


def test_random_grid_blocks_match_flat_indices():
    rng = random.Random(4242)
    for _ in range(200):
        shape = tuple(rng.randint(1, 9) for _ in range(rng.randint(1, 4)))
        n_runs = math.prod(shape)
        plan = plan_chunks(
            n_runs, 1, [10**9] * rng.randint(1, 4), shape=shape,
            max_chunk_runs=rng.randint(1, n_runs + 3), chunks_per_worker=rng.randint(1, 5),
        )
        _assert_covers(plan, n_runs)
        _assert_blocks_are_run_ranges(plan)


BAD_SHAPES = [
    (dict(n_runs=100, shape=(10, 11)), ValueError, ["shape", "(10, 11)", "100"]),
    (dict(n_runs=100, shape=(101,)), ValueError, ["shape", "(101,)", "100"]),
    (dict(n_runs=1, shape=()), ValueError, ["shape", "()"]),
    (dict(n_runs=100, shape=(10, 0, 10)), ValueError, ["shape[1]", "0"]),
    (dict(n_runs=100, shape=(-10, -10)), ValueError, ["shape[0]", "-10"]),
    (dict(n_runs=100, shape=(10.0, 10)), TypeError, ["shape[0]", "10.0"]),
    (dict(n_runs=100, shape=(10, True)), TypeError, ["shape[1]", "bool"]),
    (dict(n_runs=100, shape=100), TypeError, ["shape", "100"]),
    (dict(n_runs=100, shape="100"), TypeError, ["shape", "'100'"]),
]


@pytest.mark.parametrize("kwargs, error, fragments", BAD_SHAPES)
def test_bad_shapes_name_the_shape(kwargs, error, fragments):
    with pytest.raises(error) as info:
        plan_chunks(per_run_bytes=1, worker_budgets=[10**6], **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_plan_checks_its_own_fields():
    fields = dict(n_runs=30, shape=(3, 10), split_axis=1, split_size=4, per_run_bytes=10,
                  budget_bytes=40, n_workers=1, limited_by="budget")
    assert Plan(**fields).chunk_bytes == 40
    for override, fragment in [
        (dict(shape=(3, 9)), "shape"),
        (dict(split_axis=2), "split_axis"),
        (dict(split_size=0), "split_size"),
        (dict(split_size=11), "split_size"),
        (dict(budget_bytes=39), "budget_bytes=39"),
        (dict(limited_by="luck"), "limited_by"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            Plan(**{**fields, **override})


# ---------------------------------------------------------------- properties
def _rule_size(n_runs: int, fit: int, min_runs: int, wanted: int, max_runs: int | None):
    """Runs per chunk (before grid alignment) and the rule that set it, from the
    module's documented rules."""
    cap, cap_rule = fit, "budget"
    if max_runs is not None and max_runs < fit:
        cap, cap_rule = max_runs, "max_chunk_runs"
    balanced = -(-n_runs // wanted)
    if balanced >= min_runs:
        size, rule = balanced, "balance"
    else:
        size, rule = min(min_runs, n_runs), "min_chunk_runs"
    if size > cap:
        return cap, cap_rule
    return size, rule


def _random_shape(rng: random.Random, n_runs: int) -> tuple[int, ...]:
    """A shape holding n_runs runs: n_runs factored into 1..4 axes."""
    axes = []
    rest = n_runs
    for _ in range(rng.randint(0, 3)):
        divisors = [d for d in range(1, min(rest, 1000) + 1) if rest % d == 0]
        d = rng.choice(divisors)
        axes.append(d)
        rest //= d
    axes.append(rest)
    rng.shuffle(axes)
    return tuple(axes)


def test_random_plans_respect_every_rule():
    rng = random.Random(20261107)
    checked = grids = 0
    for _ in range(600):
        n_runs = int(10 ** rng.uniform(0, 7))
        per_run = int(10 ** rng.uniform(0, 6))
        budgets = [int(10 ** rng.uniform(2, 10)) for _ in range(rng.randint(1, 8))]
        min_runs = int(10 ** rng.uniform(0, 4))
        per_worker = rng.randint(1, 8)
        safety = rng.choice([0.5, 0.8, 0.95, 1.0])
        max_runs = rng.choice([None, None, int(10 ** rng.uniform(0, 6))])
        shape = _random_shape(rng, n_runs) if rng.random() < 0.5 else (n_runs,)
        budget = math.floor(Decimal(str(safety)) * min(budgets))
        fit = budget // per_run
        wanted = per_worker * len(budgets)
        kwargs = dict(min_chunk_runs=min_runs, chunks_per_worker=per_worker, safety=safety,
                      max_chunk_runs=max_runs, shape=shape)
        if fit < 1:
            with pytest.raises(ValueError, match="per_run_bytes"):
                plan_chunks(n_runs, per_run, budgets, **kwargs)
            continue
        plan = plan_chunks(n_runs, per_run, budgets, **kwargs)
        checked += 1
        grids += len(shape) > 1
        assert plan.budget_bytes == budget
        assert plan.n_runs == n_runs and plan.n_workers == len(budgets)
        assert plan.shape == shape
        size, rule = _rule_size(n_runs, fit, min_runs, wanted, max_runs)
        assert plan.limited_by == rule

        # memory: the largest chunk fits the budget and the cap
        assert plan.chunk_bytes == plan.chunk_runs * per_run <= budget
        assert plan.chunk_runs <= fit
        if max_runs is not None:
            assert plan.chunk_runs <= max_runs
        # the size the rules ask for, aligned down to whole blocks: at most a
        # factor 2 smaller unless the whole sweep is smaller
        assert plan.chunk_runs <= size
        assert 2 * plan.chunk_runs > size or plan.chunk_runs == n_runs
        if len(shape) == 1:
            assert plan.chunk_runs == size

        # the block shape: whole later axes, split_size on the split axis, 1 before
        axis = plan.split_axis
        tail = math.prod(shape[axis + 1:])
        assert plan.block_shape == (1,) * axis + (plan.split_size,) + shape[axis + 1:]
        assert plan.chunk_runs == plan.split_size * tail

        # count, coverage and contiguity (by arithmetic on a sample of chunks)
        rows = math.prod(shape[:axis])
        per_row = -(-shape[axis] // plan.split_size)
        assert len(plan) == rows * per_row
        chunks = plan.chunks
        assert chunks[0].start == 0 and chunks[-1].stop == n_runs
        sample = {0, len(chunks) // 2, len(chunks) - 1}
        sample |= set(rng.sample(range(len(chunks)), min(20, len(chunks))))
        last_in_row = (shape[axis] - (per_row - 1) * plan.split_size) * tail
        for j in sample:
            chunk = chunks[j]
            assert chunk.index == j
            if j + 1 < len(chunks):
                assert chunk.stop == chunks[j + 1].start
            # regularity: every chunk but the last of its row is a whole block
            row, k = divmod(j, per_row)
            assert chunk.start == row * shape[axis] * tail + k * plan.chunk_runs
            if k < per_row - 1:
                assert chunk.n_runs == plan.chunk_runs
            else:
                assert chunk.n_runs == last_in_row
            assert 0 < chunk.n_runs <= plan.chunk_runs
        if len(chunks) <= 2000:
            _assert_covers(plan, n_runs)
            sizes = _sizes(plan)
            assert sizes == ([plan.chunk_runs] * (per_row - 1) + [last_in_row]) * rows
            if n_runs <= 20_000:
                _assert_blocks_are_run_ranges(plan)

        cap = fit if max_runs is None else min(fit, max_runs)
        balanced = -(-n_runs // wanted)
        # balance when memory and min_chunk_runs allow: about `wanted` chunks
        # (never more; at least half once the sweep has `wanted` runs)
        if len(shape) == 1 and min_runs <= balanced <= cap:
            assert len(plan) <= wanted
            if n_runs >= wanted:
                assert 2 * len(plan) > wanted
            else:
                assert len(plan) == n_runs
        # device fill: chunks hold min_chunk_runs (or the whole sweep) when the
        # budget allows it; the last chunk of a row may hold fewer
        if len(shape) == 1 and min_runs <= cap:
            assert plan.chunk_runs >= min(min_runs, n_runs)
        if min_runs <= cap and n_runs <= min_runs:
            assert len(plan) == 1
    assert checked > 300 and grids > 100


def test_chunk_sequence_behaves_like_a_sequence():
    plan = plan_chunks(10, 1, [100], chunks_per_worker=3)  # ceil(10 / 3) = 4 runs
    chunks = plan.chunks
    assert len(chunks) == 3
    assert list(chunks) == [Chunk(0, 0, 4), Chunk(1, 4, 8), Chunk(2, 8, 10)]
    assert chunks[-1] == chunks[2] == plan[2]
    assert chunks[1:] == [Chunk(1, 4, 8), Chunk(2, 8, 10)]
    assert chunks[::-2] == [Chunk(2, 8, 10), Chunk(0, 0, 4)]
    assert chunks[1].slice == slice(4, 8)
    assert np.arange(10)[chunks[1].slice].tolist() == [4, 5, 6, 7]
    assert Chunk(2, 8, 10) in chunks
    assert chunks.block(chunks[2]) == (slice(8, 10),)
    with pytest.raises(IndexError):
        chunks[3]
    with pytest.raises(IndexError):
        chunks[-4]
    assert list(plan) == list(chunks)


def test_plan_is_frozen_and_comparable():
    plan = plan_chunks(1000, 10, [10_000])
    assert plan == plan_chunks(1000, 10, [10_000])
    assert plan != plan_chunks(1000, 10, [10_000], shape=(100, 10))
    with pytest.raises(AttributeError):
        plan.split_size = 5


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
    assert len(plan) == 1_250_000  # 10**9 / 800
    assert last == Chunk(1_249_999, 999_999_200, 10**9)
    assert middle == Chunk(625_000, 500_000_000, 500_000_800)
    assert elapsed < 0.1
    assert peak < 2**20
    lines = text.splitlines()
    assert len(lines) < 30
    assert "1,000,000,000 runs" in lines[0] and "1,250,000 chunks" in lines[0]
    assert "999,999,200" in text


def test_billion_run_grid_plan_is_instant_and_short():
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        # 800 runs fit: blocks (1, 1, 800) of (1000, 1000, 1000), 2 per row of 1000
        plan = plan_chunks(10**9, 10**6, [10**9] * 4, shape=(1000, 1000, 1000))
        text = repr(plan)
        last = plan.chunks[-1]
        middle = plan.chunks[len(plan) // 2]
        last_block = plan.chunks.block(last)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.block_shape == (1, 1, 800)
    assert len(plan) == 2_000_000
    assert last == Chunk(1_999_999, 999_999_800, 10**9)
    assert middle == Chunk(1_000_000, 500_000_000, 500_000_800)
    assert last_block == (slice(999, 1000), slice(999, 1000), slice(800, 1000))
    assert elapsed < 0.1
    assert peak < 2**20
    lines = text.splitlines()
    assert len(lines) < 30
    assert "2,000,000 chunks" in lines[0] and "(1, 1, 800)" in lines[0]


def test_repr_lists_small_plans_fully():
    text = repr(plan_chunks(1000, 10, [2_000]))
    lines = text.splitlines()
    assert len(lines) == 2 + 7
    assert "set by budget" in lines[0] and "<= 160 runs" in lines[0]
    assert lines[-1].split() == ["6", "960", "1,000", "40", "0.0004"]


def test_format_bytes():
    assert format_bytes(0) == "0 B"
    assert format_bytes(999) == "999 B"
    assert format_bytes(1_430) == "1.43 kB"
    assert format_bytes(8 * 10**7) == "80 MB"
    assert format_bytes(2.5e9) == "2.5 GB"
    assert format_bytes(3 * 10**12) == "3 TB"


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
    plan = plan_chunks(np.int64(1000), np.int32(10), np.array([10_000, 20_000]),
                       shape=np.array([100, 10]))
    assert plan.n_runs == 1000 and plan.budget_bytes == 8_000
    assert plan.shape == (100, 10) and all(type(n) is int for n in plan.shape)
