"""BatchSolverKernel and the factory pattern: the seed's acceptance criteria."""

import attrs
import numpy as np
import pytest

from cubie_kernel import BatchSolverConfig, Solver
from cubie_kernel.factory import CompiledFactory
from cubie_kernel.launch_geometry import launch_geometry, needs_padding, shared_stride
from cubie_kernel.systems import exponential_decay, lorenz


def rk4_decay(rate, dt, n_steps):
    """RK4 applied to y' = -rate y: exactly R(z)^n with z = -rate dt."""
    z = -rate * dt
    return (1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24) ** n_steps


@pytest.fixture
def solver():
    return Solver(lorenz(), method="rk4", dt=0.01, save_every=0.5, target="cpu")


def test_config_holds_only_compile_time_settings():
    assert [f.name for f in attrs.fields(BatchSolverConfig)] == [
        "loop_fn",
        "compile_flags",
        "precision",
    ]


def test_kernel_memory_properties_are_registry_queries(solver):
    kernel = solver.kernel
    run = kernel.single_integrator
    registry = solver.registry
    for locations in ({}, {"state_location": "shared"}, {"stages_location": "shared"}):
        kernel.update(locations)
        assert kernel.shared_memory_elements == registry.shared_buffer_size(run)
        assert kernel.local_memory_elements == registry.persistent_local_buffer_size(run)
        assert run.shared_memory_elements == registry.shared_buffer_size(run)
        itemsize = np.dtype(run.precision).itemsize
        assert kernel.shared_memory_bytes == shared_stride(kernel.shared_memory_elements) * itemsize


def test_location_update_changes_sizes_and_the_next_build(solver, monkeypatch):
    built = []
    target = solver.kernel.backend
    original = target.build_batch_kernel

    def spy(driver, sizes):
        built.append((sizes.shared, sizes.persistent))
        return original(driver, sizes)

    monkeypatch.setattr(target, "build_batch_kernel", spy)
    kernel = solver.kernel
    reference = solver.solve(parameters={"rho": [5.0, 28.0]}, duration=1.0)
    assert kernel.shared_memory_elements == 0  # everything local by default
    assert built[-1] == (0, kernel.registry.persistent_region_size(kernel.single_integrator, "cpu"))

    recognised = solver.update(state_location="shared", proposed_state_location="shared")
    assert recognised == {"state_location", "proposed_state_location"}
    n = lorenz().n_states
    assert kernel.shared_memory_elements == 2 * n
    moved = solver.solve(parameters={"rho": [5.0, 28.0]}, duration=1.0)
    assert built[-1][0] == 2 * n
    np.testing.assert_array_equal(moved.x.values, reference.x.values)

    solver.update(stages_location="shared")
    rk4_stages = 0  # RK4 keeps every stage in registers (no FSAL stage to carry over)
    assert kernel.shared_memory_elements == 2 * n + rk4_stages
    solver.solve(parameters={"rho": [5.0]}, duration=0.1)
    assert built[-1][0] == 2 * n + rk4_stages


def test_zero_shared_memory_runs(solver):
    assert solver.kernel.shared_memory_elements == 0
    assert solver.kernel.shared_memory_bytes == 0
    assert not solver.kernel.shared_memory_needs_padding
    ds = solver.solve(parameters={"rho": [0.0]}, duration=1.0)
    # rho = 0: x' = -sigma x decouples
    np.testing.assert_allclose(ds.x.values[0, -1], rk4_decay(10.0, 0.01, 100), rtol=1e-12)


def test_cache_invalidates_only_when_the_loop_function_changes(solver):
    kernel = solver.kernel
    first = kernel.device_function
    loop_fn = kernel.config.loop_fn
    assert kernel.device_function is first  # no rebuild on re-read
    solver.update(dt=0.01)  # same value: nothing changes
    assert kernel.config.loop_fn is loop_fn
    assert kernel.device_function is first
    solver.update(dt=0.005)
    assert kernel.config.loop_fn is not loop_fn
    second = kernel.device_function
    assert second is not first
    solver.update(save_observables=False)  # output flags are compile flags
    assert kernel.config.compile_flags.observables == ()
    assert kernel.device_function is not second


def test_update_routes_and_rejects_unknown_keys(solver):
    with pytest.raises(ValueError, match="unknown setting.*not_a_setting"):
        solver.update(not_a_setting=1)
    with pytest.raises(ValueError, match="bogus_location"):
        solver.update(bogus_location="shared")
    with pytest.raises(ValueError, match="state_location"):
        solver.update(state_location="register")
    # a failed update changes nothing, whichever part of it is bad
    before = (solver.settings, solver.kernel.shared_memory_elements)
    with pytest.raises(ValueError, match="state_location"):
        solver.update(method="euler", state_location="bogus")
    with pytest.raises(ValueError):
        solver.update(state_location="shared", method="no_such_method")
    assert (solver.settings, solver.kernel.shared_memory_elements) == before
    recognised = solver.update(method="euler", state_location="shared")
    assert recognised == {"method", "state_location"}
    assert solver.settings.method == "euler"


def test_per_run_device_bytes_counts_inputs_outputs_and_scratch():
    system = lorenz()
    solver = Solver(system, method="rk4", dt=0.01, save_every=0.25, target="cpu")
    itemsize = 8
    n_saves = 5  # 0, .25, .5, .75, 1
    inputs = (3 + 3) * itemsize
    outputs = n_saves * 3 * itemsize  # 3 states, no observables
    bookkeeping = 3 * 4  # status + 2 counters (int32)
    run_state = 8 * 8 + 13 * 4  # the loop's per-run state words: 8 float64, 13 int32
    # state, proposal, error (none: RK4), stages (none: RK4 keeps them in
    # registers), the lane's parameters
    scratch = (3 + 3 + 0 + 0 + 3) * itemsize
    assert solver.kernel.per_run_device_bytes(1.0) == (
        inputs + outputs + bookkeeping + run_state + scratch
    )


def test_device_chunking_from_memory_budget():
    solver = Solver(exponential_decay(), method="rk4", dt=0.01, save_every=0.5, target="cpu")
    per_run = solver.kernel.per_run_device_bytes(1.0)
    budget = int(per_run * 10 / 0.8) + 1  # ten runs per chunk
    ds = solver.solve(parameters={"k": np.linspace(0.1, 2.0, 35)}, duration=1.0, memory_bytes=budget)
    assert ds.attrs["device_chunks"] == 4
    k = ds.k.values[:, None]
    steps = np.rint(ds.time.values / 0.01)[None, :]
    np.testing.assert_allclose(ds.y.values, rk4_decay(k, 0.01, steps), rtol=1e-12)
    with pytest.raises(MemoryError, match="one run needs"):
        solver.solve(parameters={"k": [1.0]}, duration=1.0, memory_bytes=per_run)


def test_padding_rule_and_launch_geometry():
    assert not needs_padding(0) and not needs_padding(3) and needs_padding(4)
    assert shared_stride(4) == 5 and shared_stride(5) == 5
    geo = launch_geometry(1000, shared_elements=5, itemsize=8, max_shared_per_block=48 * 1024)
    assert (geo.threads_per_block, geo.blocks) == (128, 8)
    assert geo.shared_bytes_per_block == 128 * 5 * 8
    # 100 elements x 8 bytes = 800 B per run: 128 threads need 102 kB > 48 kB
    geo = launch_geometry(1000, shared_elements=99, itemsize=8, max_shared_per_block=48 * 1024)
    assert geo.threads_per_block == 32  # 32 * 800 = 25.6 kB fits, 64 * 800 = 51.2 kB does not
    assert geo.shared_bytes_per_block <= 48 * 1024
    assert geo.blocks == -(-1000 // 32)
    with pytest.raises(ValueError, match="one run needs 49160 bytes"):
        launch_geometry(10, shared_elements=6145, itemsize=8, max_shared_per_block=48 * 1024)


@attrs.frozen
class _Settings:
    a: int = 1
    b: float = 2.0


class _Factory(CompiledFactory):
    def build(self):
        return object()


def test_update_compile_settings_contract():
    factory = _Factory(_Settings())
    first = factory.device_function
    assert factory.update_compile_settings({"a": 1}) == {"a"}
    assert factory.device_function is first and factory.build_count == 1
    with pytest.raises(KeyError, match=r"\['c'\]"):
        factory.update_compile_settings({"a": 5, "c": 3})
    assert factory.compile_settings.a == 1  # nothing applied on error
    assert factory.update_compile_settings({"a": 5, "c": 3}, silent=True) == {"a"}
    assert factory.device_function is not first and factory.build_count == 2
    assert factory.update_compile_settings(b=2.0) == {"b"}
    assert factory.build_count == 2
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        factory.compile_settings.a = 3


def test_per_save_counters_are_cumulative_and_chunk_invariant(solver):
    counted = Solver(
        lorenz(), method="rk45", rtol=1e-6, atol=1e-9, save_every=2.0, save_counters=True,
        target="cpu",
    )
    rho = [0.0, 25.0, 50.0]
    whole = counted.solve(parameters={"rho": rho}, duration=10.0)
    steps, rejected = whole.n_steps_at_save.values, whole.n_rejected_at_save.values
    assert steps.shape == (3, 6)
    np.testing.assert_array_equal(steps[:, 0], 0)  # nothing taken before t0
    assert np.all(np.diff(steps, axis=1) > 0) and np.all(np.diff(rejected, axis=1) >= 0)
    np.testing.assert_array_equal(steps[:, -1], whole.n_steps.values)
    np.testing.assert_array_equal(rejected[:, -1], whole.n_rejected.values)
    budget = int(counted.kernel.per_run_device_bytes(10.0) * 1.3)  # one run per chunk
    chunked = counted.solve(parameters={"rho": rho}, duration=10.0, memory_bytes=budget)
    assert chunked.attrs["device_chunks"] == 3
    np.testing.assert_array_equal(chunked.n_steps_at_save.values, steps)
    np.testing.assert_array_equal(chunked.x.values, whole.x.values)
    # without save_counters (the default) there are none: the module's rk4 solver
    # (the fixture), whose kernel the tests above compiled already
    assert not solver.settings.output.counters
    plain = solver.solve(parameters={"rho": rho}, duration=1.0)
    assert "n_steps_at_save" not in plain and "n_rejected_at_save" not in plain


def test_solvers_sharing_a_registry_do_not_invalidate_each_other():
    from cubie_kernel import BufferRegistry

    registry = BufferRegistry()
    first = Solver(lorenz(), method="rk4", dt=0.01, target="cpu", registry=registry)
    kernel = first.kernel.device_function
    second = Solver(exponential_decay(), method="rk4", dt=0.01, target="cpu", registry=registry)
    second.update(state_location="shared")
    assert first.kernel.device_function is kernel
    assert second.kernel.shared_memory_elements == 1
    assert first.kernel.shared_memory_elements == 0
