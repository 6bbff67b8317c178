"""The step device functions (explicit Runge-Kutta and Rosenbrock engines), called
directly on the cpu target (lane form: a block of runs per call)."""

import numpy as np
import pytest

from cubie_kernel import BufferRegistry, targets
from cubie_kernel.algorithms import make_step
from cubie_kernel.algorithms.rosenbrock_tableau import RosenbrockTableau
from cubie_kernel.algorithms.tableaus import TABLEAUS
from cubie_kernel.systems import lorenz


@pytest.mark.parametrize("method", sorted(TABLEAUS))
def test_step_never_reads_uninitialised_scratch(method):
    """Scratch comes from np.empty: a first step must not read what is in it.

    (Sums formed relative to k_0 once read k_0 before computing it: NaN
    garbage then poisoned the step, depending on allocation history.)
    """
    registry = BufferRegistry()
    step = make_step(TABLEAUS[method], lorenz(), registry, np.float64)
    function = step.device_function
    lanes = targets.get_target("cpu").lanes(np.float64)
    size = registry.persistent_region_size(step, "cpu") * lanes
    shared = np.empty(registry.shared_buffer_size(step) * lanes)
    state = np.repeat([1.0, 2.0, 3.0], lanes)  # lane form: state i of lane j at i * L + j
    parameters = np.repeat([10.0, 28.0, 8 / 3], lanes)
    t = np.zeros(lanes)
    h = np.full(lanes, 1e-3)
    first_stage = np.zeros(lanes, np.int32)
    step_status = np.full(lanes, -1, np.int32)
    results = []
    for fill in (0.0, np.nan, np.inf):
        persistent = np.full(size, fill)
        proposed, error = np.full(3 * lanes, fill), np.full(3 * lanes, fill)
        function(state, proposed, error, parameters, t, h, first_stage, step_status, shared,
                 persistent)
        results.append((proposed.copy(), error.copy() if step.tableau.adaptive else None))
    assert np.all(np.isfinite(results[0][0]))
    if isinstance(step.tableau, RosenbrockTableau):  # implicit steps report success
        np.testing.assert_array_equal(step_status, 0)
    for proposed, error in results[1:]:
        np.testing.assert_array_equal(proposed, results[0][0])
        if error is not None:
            np.testing.assert_array_equal(error, results[0][1])
    # every lane took the same step, and it is a step of the right size:
    # one Euler step agrees to O(h^2)
    by_lane = results[0][0].reshape(3, lanes)
    np.testing.assert_array_equal(by_lane, by_lane[:, :1] * np.ones((1, lanes)))
    derivative = np.array([10.0 * (2 - 1), 1 * (28 - 3) - 2, 1 * 2 - 8 / 3 * 3])
    np.testing.assert_allclose(by_lane[:, 0], [1.0, 2.0, 3.0] + 1e-3 * derivative, atol=1e-3)
