"""Step-size controllers against independent references.

The device functions are compiled for the cpu target (numba.njit) and
called from Python with numpy arrays. Every number they return is checked
against a plain-numpy re-implementation of the documented formulas
(written in Soderlind's ``beta`` form, not the exponents the device code
uses), and the elementary controller against scipy's RK45 itself: each
step attempt scipy makes is intercepted and replayed through ``"i"``.
"""

from __future__ import annotations

import functools
import math

import attrs
import numpy as np
import pytest
import numba
from numba import cuda
from scipy.integrate import RK45
from scipy.integrate._ivp import rk as scipy_rk

from cubie_kernel.algorithms.tableaus import TABLEAUS
from cubie_kernel.buffers import BufferRegistry
from cubie_kernel.controllers import (
    CONTROLLER_NAMES,
    CONTROLLERS,
    ControllerSettings,
    default_controller_for,
    make_controller,
    per_state,
)

try:  # scipy's own constants; the documented values if they move
    from scipy.integrate._ivp.rk import MAX_FACTOR, MIN_FACTOR, SAFETY
except ImportError:  # pragma: no cover
    SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0

PRECISIONS = [np.float64, np.float32]
ADAPTIVE = [n for n in CONTROLLER_NAMES if n != "fixed"]
#: History elements each controller keeps, stated independently of the code.
HISTORY_SIZES = {"fixed": 0, "i": 0, "pi": 1, "pid": 2, "gustafsson": 2}
#: Default (kp, ki, kd) from the literature: identity, PI.3.4, H312PID.
LITERATURE_GAINS = {"i": (0.0, 1.0, 0.0), "pi": (0.4, 0.3, 0.0), "pid": (-2 / 9, 2 / 9, 1 / 18)}
#: H312PID in Soderlind's k*beta coefficients.
H312PID_BETA = (1 / 18, 1 / 9, 1 / 18)
RTOL = 1e-12
#: float32 controllers compute in float32 (norm, powers, products): a few
#: float32 ulps from the float64 reference.
RTOL_F32 = 1e-5


def rtol_of(precision) -> float:
    return RTOL_F32 if np.dtype(precision) == np.float32 else RTOL


# ----------------------------------------------------------------- references
def reference_norm(state, proposed, error, atol, rtol) -> float:
    """scipy's RMS norm in float64; inf for a non-finite proposal."""
    y0 = np.asarray(state, np.float64)
    y1 = np.asarray(proposed, np.float64)
    if not np.all(np.isfinite(y1)):
        return math.inf
    scale = np.asarray(atol) + np.asarray(rtol) * np.maximum(np.abs(y0), np.abs(y1))
    return float(np.sqrt(np.mean((np.asarray(error, np.float64) / scale) ** 2)))


class Reference:
    """The documented controllers, in numpy, with history rounded like the device's."""

    def __init__(self, name: str, settings: ControllerSettings, gains=None):
        self.name = name
        self.s = settings
        self.round = np.dtype(settings.precision).type
        self.k = settings.error_order + 1 if settings.error_order else None
        self.gains = gains
        self.reset()

    def reset(self):
        if self.name == "gustafsson":
            self.dt_acc, self.r_acc = 0.0, 1.0
        else:
            self.r1 = self.r2 = 1.0

    @property
    def history(self):
        if self.name == "gustafsson":
            return [self.dt_acc, self.r_acc]
        return {"fixed": [], "i": [], "pi": [self.r1], "pid": [self.r1, self.r2]}[self.name]

    def __call__(self, dt, state, proposed, error):
        s = self.s
        if self.name == "fixed":
            return True, dt
        norm = reference_norm(state, proposed, error, s.atol, s.rtol)
        if not math.isfinite(norm):
            return False, min(dt * s.min_factor, s.dt_max)
        accept = norm <= 1.0
        r = max(norm, 1e-10)
        k = self.k
        if self.name in ("i", "pi", "pid") and not accept:
            # rejected: the elementary factor, never growing
            factor = min(max(s.safety / r ** (1 / k), s.min_factor), 1.0)
        elif self.name in ("i", "pi", "pid"):
            kp, ki, kd = self.gains
            b1, b2, b3 = kp + ki + kd, -(kp + 2 * kd), kd
            factor = s.safety * (1 / r) ** (b1 / k) * (1 / self.r1) ** (b2 / k)
            factor *= (1 / self.r2) ** (b3 / k)
            self.r1, self.r2 = float(self.round(r)), float(self.round(self.r1))
        else:
            factor = s.safety / r ** (1 / k)
            if accept:
                if self.dt_acc > 0:
                    predicted = s.safety * (dt / self.dt_acc) * (self.r_acc / r) ** (1 / k)
                    factor = min(factor, predicted / r ** (1 / k))
                self.dt_acc = float(self.round(dt))
                self.r_acc = float(self.round(max(norm, 1e-2)))
        factor = min(max(factor, s.min_factor), s.max_factor)
        if not accept:
            factor = min(factor, 1.0)
        return accept, min(dt * factor, s.dt_max)


# ------------------------------------------------------------------- harness
class Harness:
    """A controller compiled for the cpu target, with its own memory.

    The cpu target settles a block of ``L`` lanes per call (lane form:
    state ``i`` of lane ``j`` at ``i * L + j``). Every call puts the same
    step into every lane and checks that all lanes agree, so the lane
    bookkeeping is tested along with the numbers.
    """

    def __init__(self, name: str, settings: ControllerSettings):
        self.registry = BufferRegistry()
        self.ctrl = make_controller(name, settings, self.registry)
        dtype = settings.precision
        self.dtype = np.dtype(dtype).type  # the loop hands the controller steps of this type
        self.lanes = self.ctrl.lanes
        self.shared = np.zeros(self.registry.shared_buffer_size(self.ctrl) * self.lanes, dtype)
        self.persistent = np.full(
            self.registry.persistent_region_size(self.ctrl, "cpu") * self.lanes, np.nan, dtype
        )
        slot = self.registry.layout(self.ctrl, "cpu")["history"]
        self.history_slice = slice(slot.offset * self.lanes, (slot.offset + slot.size) * self.lanes)
        self.control = self.ctrl.device_function
        self.reset_fn = self.ctrl.reset_function

    def reset(self):
        for j in range(self.lanes):
            self.reset_fn(self.shared, self.persistent, j)

    def lane_form(self, values):
        return np.repeat(np.asarray(values, self.dtype), self.lanes)

    def __call__(self, dt, state, proposed, error, clamped=False):
        h = np.full(self.lanes, float(self.dtype(dt)))
        accept = np.full(self.lanes, -1, np.int32)
        h_next = np.full(self.lanes, np.nan)
        self.control(
            h, np.full(self.lanes, int(clamped), np.int32), self.lane_form(state), self.lane_form(proposed), self.lane_form(error),
            accept, h_next, self.shared, self.persistent,
        )
        assert np.all(accept == accept[0]) and accept[0] in (0, 1), "lanes disagree"
        np.testing.assert_array_equal(h_next, h_next[0], err_msg="lanes disagree")
        assert float(self.dtype(h_next[0])) == h_next[0], "h_next is not of the precision"
        return bool(accept[0]), float(h_next[0])

    @property
    def history(self):
        """Lane 0's history (every lane holds the same)."""
        lanes = self.persistent[self.history_slice].astype(np.float64).reshape(-1, self.lanes)
        np.testing.assert_array_equal(lanes, lanes[:, :1] * np.ones_like(lanes))
        return lanes[:, 0]


@functools.lru_cache(maxsize=None)
def harness(name: str, settings: ControllerSettings) -> Harness:
    return Harness(name, settings)


def settings_for(precision=np.float64, **overrides) -> ControllerSettings:
    values = dict(
        n_states=4, error_order=4, atol=(1e-6, 1e-8, 1e-7, 1e-6), rtol=(1e-4, 1e-5, 1e-4, 1e-3),
        precision=precision,
    )
    values.update(overrides)
    return ControllerSettings(**values)


def make_step(rng, settings, target_norm, dtype):
    """(state, proposed, error) arrays whose norm is close to ``target_norm``."""
    n = settings.n_states
    state = (rng.normal(size=n) * 10.0 ** rng.uniform(-3, 2, size=n)).astype(dtype)
    proposed = (state * (1 + 0.01 * rng.normal(size=n))).astype(dtype)
    direction = rng.normal(size=n)
    raw = reference_norm(state, proposed, direction, settings.atol, settings.rtol)
    error = (direction * target_norm / raw).astype(dtype)
    return state, proposed, error


def random_sequence(rng, settings, n_steps, dtype, special=True):
    """Steps with norms from 1e-12 to 1e3, plus zero, NaN and inf cases."""
    steps = []
    for i in range(n_steps):
        while True:
            target = 10.0 ** rng.uniform(-12, 3)
            state, proposed, error = make_step(rng, settings, target, dtype)
            norm = reference_norm(state, proposed, error, settings.atol, settings.rtol)
            if abs(norm - 1.0) > 1e-4:  # clear of the accept boundary, float32 included
                break
        if special and i % 11 == 5:
            error[:] = 0
        if special and i % 13 == 7:
            error[1] = np.nan
        if special and i % 17 == 9:
            proposed[2] = np.inf
        steps.append((state, proposed, error))
    return steps


def gains_of(name, settings):
    if name in LITERATURE_GAINS:
        default = LITERATURE_GAINS[name]
        given = (settings.kp, settings.ki, settings.kd)
        return tuple(d if g is None else g for g, d in zip(given, default))
    return None


def check_against_reference(name, settings, steps, dts=None, feed_back=True):
    """Run a sequence through device and reference; compare every output."""
    device = harness(name, settings)
    ref = Reference(name, settings, gains_of(name, settings))
    device.reset()
    ref.reset()
    np.testing.assert_array_equal(device.history, ref.history)
    dt = 1e-2
    outcomes = []
    for i, (state, proposed, error) in enumerate(steps):
        if dts is not None:
            dt = dts[i]
        got = device(dt, state, proposed, error)
        want = ref(dt, state, proposed, error)
        assert got[0] == want[0], f"step {i}: accept {got[0]} != {want[0]}"
        rtol = rtol_of(settings.precision)
        assert got[1] == pytest.approx(want[1], rel=rtol), f"step {i}: dt_next"
        np.testing.assert_allclose(device.history, ref.history, rtol=rtol, err_msg=f"step {i}")
        outcomes.append(got)
        if feed_back:
            dt = got[1]
    return outcomes


# --------------------------------------------------------- formulas vs numpy
@pytest.mark.parametrize("precision", PRECISIONS, ids=lambda p: np.dtype(p).name)
@pytest.mark.parametrize("name", CONTROLLER_NAMES)
def test_matches_reference_on_random_sequences(name, precision, rng):
    settings = settings_for(precision, dt_max=0.05)
    steps = random_sequence(rng, settings, 80, precision)
    outcomes = check_against_reference(name, settings, steps)
    if name != "fixed":
        accepted = [a for a, _ in outcomes]
        assert 10 < sum(accepted) < len(accepted) - 10  # both branches exercised
        dt_max = float(np.dtype(precision).type(0.05))  # as the device holds it
        assert any(d == dt_max for _, d in outcomes)  # dt_max reached


@pytest.mark.parametrize("name", ["pi", "pid"])
def test_matches_reference_with_user_gains_and_limits(name, rng):
    settings = settings_for(
        error_order=2, kp=0.15, ki=0.5, kd=0.0 if name == "pi" else 0.07,
        safety=0.8, min_factor=0.1, max_factor=5.0, atol=1e-5, rtol=1e-4,
    )
    steps = random_sequence(rng, settings, 60, np.float64)
    dts = 10.0 ** rng.uniform(-6, 0, size=len(steps))
    check_against_reference(name, settings, steps, dts=dts, feed_back=False)


def test_default_gains_are_the_literature_values():
    for name, gains in LITERATURE_GAINS.items():
        ctrl = make_controller(name, settings_for(), BufferRegistry())
        assert ctrl.gains == pytest.approx(gains, rel=1e-15)
    pid = make_controller("pid", settings_for(error_order=4), BufferRegistry())
    k = 5
    # exponents of (r_n, r_{n-1}, r_{n-2}) are -k*beta_i / k
    assert np.multiply(pid.exponents, -k) == pytest.approx(H312PID_BETA, rel=1e-14)


# -------------------------------------------------------------- single cases
#: Gains for which an exact step hits max_factor (H312PID's b1 = 1/18 would not).
STRONG_GAINS = {"pid": {"kp": 0.1, "ki": 0.6, "kd": 0.1}}


@pytest.mark.parametrize("name", ADAPTIVE)
def test_clamps_and_dt_max(name):
    settings = settings_for(dt_max=0.3, **STRONG_GAINS.get(name, {}))
    device = harness(name, settings)
    state, proposed = np.ones(4), np.ones(4)
    scale = np.array(settings.atol) + np.array(settings.rtol)  # |state| = |proposed| = 1
    device.reset()
    # exact step: norm floored at 1e-10, factor clamped to max_factor
    assert device(0.01, state, proposed, np.zeros(4)) == (True, pytest.approx(0.1, rel=RTOL))
    device.reset()
    # huge but finite error: rejected, factor clamped to min_factor
    huge = np.full(4, 1e30)
    assert device(0.01, state, proposed, huge) == (False, pytest.approx(0.002, rel=RTOL))
    device.reset()
    # growth beyond dt_max is cut to dt_max
    assert device(0.2, state, proposed, np.zeros(4)) == (True, 0.3)
    device.reset()
    # a rejected step above dt_max: factor < 1, and dt_max applies too
    accept, dt_next = device(0.5, state, proposed, 1.2 * scale)
    assert not accept and dt_next == 0.3
    device.reset()
    accept, dt_next = device(0.25, state, proposed, 1.2 * scale)
    assert not accept and dt_next < 0.25


@pytest.mark.parametrize("name", ADAPTIVE)
@pytest.mark.parametrize("bad", ["nan_error", "inf_error", "inf_proposed", "nan_proposed"])
def test_non_finite_rejects_with_min_factor(name, bad):
    settings = settings_for(dt_max=0.05)
    device = harness(name, settings)
    state, proposed, error = np.ones(4), np.ones(4), np.full(4, 1e-12)
    device.reset()
    device(0.01, state, proposed, error)  # one accepted step: some history
    before = device.history.copy()
    if bad == "nan_error":
        error = error.copy(); error[0] = np.nan
    elif bad == "inf_error":
        error = error.copy(); error[3] = -np.inf
    elif bad == "inf_proposed":
        proposed = proposed.copy(); proposed[1] = np.inf
    else:
        proposed = proposed.copy(); proposed[2] = np.nan
    assert device(0.01, state, proposed, error) == (False, pytest.approx(0.002, rel=RTOL))
    assert device(1.0, state, proposed, error) == (False, 0.05)  # dt_max still applies
    np.testing.assert_array_equal(device.history, before)


@pytest.mark.parametrize("name, gains", [("pid", (-1.0, 1.2, 0.0)), ("pid", None)])
def test_rejection_always_shrinks_the_step(name, gains):
    """History of tiny accepted errors must not keep a rejected step's size.

    With the filter's factor the history term would grow the step despite
    the rejection (capped at 1, the same step would be retried forever);
    a rejection shrinks by the elementary factor safety * r**(-1/k).
    """
    kp, ki, kd = gains if gains else (None, None, None)
    settings = settings_for(kp=kp, ki=ki, kd=kd)
    device = harness(name, settings)
    ref = Reference(name, settings, gains_of(name, settings))
    state, proposed = np.ones(4), np.ones(4)
    device.reset()
    ref.reset()
    tiny = np.full(4, 1e-9 * 1e-6)
    for _ in range(3):
        device(0.01, state, proposed, tiny)
        ref(0.01, state, proposed, tiny)
    slightly_bad = 1.05 * (np.array(settings.atol) + np.array(settings.rtol))  # norm 1.05
    b1, b2, b3 = ref.gains[0] + ref.gains[1] + ref.gains[2], -(ref.gains[0] + 2 * ref.gains[2]), ref.gains[2]
    filtered = 0.9 * 1.05 ** (-b1 / 5) * ref.r1 ** (-b2 / 5) * ref.r2 ** (-b3 / 5)
    assert filtered > 0.99  # the filter alone would not shrink the step
    accept, dt_next = device(0.01, state, proposed, slightly_bad)
    assert accept is False
    assert dt_next == pytest.approx(0.01 * 0.9 * 1.05 ** (-1 / 5), rel=1e-12)


def test_fixed_accepts_everything_and_keeps_dt():
    device = harness("fixed", settings_for(dt_max=0.01))
    device.reset()
    bad = np.full(4, np.nan)
    assert device(0.25, np.ones(4), bad, bad) == (True, 0.25)
    assert device.ctrl.is_adaptive is False
    assert all(CONTROLLERS[n].is_adaptive for n in ADAPTIVE)


# ----------------------------------------------------------------------- scipy
def _lorenz(t, y):
    return np.array([10.0 * (y[1] - y[0]), y[0] * (28.0 - y[2]) - y[1], y[0] * y[1] - 8 / 3 * y[2]])


def test_i_reproduces_scipy_rk45_step_sizes(monkeypatch):
    """Replay every step attempt of scipy's RK45 through the "i" controller."""
    atol, rtol = np.array([1e-6, 1e-7, 1e-8]), 1e-5
    solver = RK45(
        _lorenz, 0.0, np.array([1.0, 1.0, 1.0]), 3.0, rtol=rtol, atol=atol, first_step=0.3
    )
    attempts = []
    original_rk_step = scipy_rk.rk_step

    def recording_rk_step(fun, t, y, f, h, A, B, C, K):
        y_new, f_new = original_rk_step(fun, t, y, f, h, A, B, C, K)
        error = solver._estimate_error(K, h)
        attempts.append((abs(h), y.copy(), y_new.copy(), error))
        return y_new, f_new

    monkeypatch.setattr(scipy_rk, "rk_step", recording_rk_step)
    settings = ControllerSettings(
        3, RK45.error_estimator_order, atol=atol, rtol=rtol,
        safety=SAFETY, min_factor=MIN_FACTOR, max_factor=MAX_FACTOR,
    )
    device = harness("i", settings)
    device.reset()
    n_rejected = n_accepted = 0
    while solver.status == "running" and n_accepted < 400:
        attempts.clear()
        solver.step()
        *rejected, last = attempts
        for (h, y, y_new, error), (h_retry, *_) in zip(rejected, attempts[1:]):
            accept, dt_next = device(h, y, y_new, error)
            scipy_norm = scipy_rk.norm(error / (atol + np.maximum(abs(y), abs(y_new)) * rtol))
            assert not accept and scipy_norm >= 1
            assert dt_next == pytest.approx(h_retry, rel=1e-9)  # retry h went through t + h - t
            assert dt_next / h == pytest.approx(
                max(MIN_FACTOR, SAFETY * scipy_norm ** (-1 / (RK45.error_estimator_order + 1))),
                rel=RTOL,
            )
            n_rejected += 1
        h, y, y_new, error = last
        accept, dt_next = device(h, y, y_new, error)
        assert accept
        if rejected:  # scipy's rule after rejections within one step: no growth
            dt_next = min(dt_next, h)
        if solver.status == "running":
            assert dt_next == pytest.approx(solver.h_abs, rel=RTOL)
        n_accepted += 1
    assert n_accepted > 50 and n_rejected >= 2


@pytest.mark.parametrize("precision", PRECISIONS, ids=lambda p: np.dtype(p).name)
def test_i_factor_is_scipys_formula(precision, rng):
    settings = ControllerSettings(
        5, 4, atol=rng.uniform(1e-8, 1e-5, 5), rtol=1e-4, precision=precision
    )
    device = harness("i", settings)
    device.reset()
    for target in 10.0 ** rng.uniform(-8, 3, size=60):
        state, proposed, error = make_step(rng, settings, target, precision)
        y0, y1 = state.astype(float), proposed.astype(float)
        scale = np.asarray(settings.atol) + np.maximum(np.abs(y0), np.abs(y1)) * 1e-4
        norm = scipy_rk.norm(error.astype(float) / scale)
        if abs(norm - 1) < 1e-9:
            continue
        want = SAFETY * norm ** (-1 / 5)
        want = min(MAX_FACTOR, want) if norm < 1 else max(MIN_FACTOR, want)
        accept, dt_next = device(0.125, state, proposed, error)
        assert accept == (norm < 1)
        assert dt_next / 0.125 == pytest.approx(want, rel=max(1e-11, rtol_of(precision)))


# ----------------------------------------------------------- family relations
@pytest.mark.parametrize("name", ["pi", "pid"])
def test_unit_integral_gain_alone_is_the_i_controller(name, rng):
    settings = settings_for()
    i_device = harness("i", settings)
    other = harness(name, settings_for(kp=0.0, ki=1.0, kd=0.0))
    i_device.reset()
    other.reset()
    dt_i = dt_o = 1e-3
    for state, proposed, error in random_sequence(rng, settings, 50, np.float64):
        got_i, got_o = i_device(dt_i, state, proposed, error), other(dt_o, state, proposed, error)
        assert got_i == got_o
        dt_i, dt_o = got_i[1], got_o[1]


def test_pi_and_pid_differ_from_i_with_history(rng):
    settings = settings_for()
    state, proposed, _ = make_step(rng, settings, 1.0, np.float64)
    small = make_step(rng, settings, 1e-3, np.float64)
    results = {}
    for name in ("i", "pi", "pid"):
        device = harness(name, settings)
        device.reset()
        device(0.01, *small)
        results[name] = device(0.01, *small)[1]
    assert len(set(results.values())) == 3


def test_history_updates_only_on_accepted_steps():
    settings = settings_for()
    pid, gus = harness("pid", settings), harness("gustafsson", settings)
    scale = np.array(settings.atol) + np.array(settings.rtol)  # |state| = |proposed| = 1
    ones = np.ones(4)

    def error_with_norm(norm):
        return scale * norm

    for device in (pid, gus):
        device.reset()
    np.testing.assert_array_equal(pid.history, [1.0, 1.0])
    np.testing.assert_array_equal(gus.history, [0.0, 1.0])
    sequence = [(0.01, 0.5, True), (0.02, 3.0, False), (0.015, 7.0, False),
                (0.01, 0.25, True), (0.02, 0.003, True), (0.03, 2.0, False)]
    expected_pid = [[1.0, 1.0]]
    expected_gus = [[0.0, 1.0]]
    for dt, norm, accepted in sequence:
        error = error_with_norm(norm)
        assert pid(dt, ones, ones, error)[0] is accepted
        assert gus(dt, ones, ones, error)[0] is accepted
        if accepted:
            expected_pid.append([norm, expected_pid[-1][0]])
            expected_gus.append([dt, max(norm, 1e-2)])
        else:
            expected_pid.append(expected_pid[-1])
            expected_gus.append(expected_gus[-1])
        np.testing.assert_allclose(pid.history, expected_pid[-1], rtol=1e-14)
        np.testing.assert_allclose(gus.history, expected_gus[-1], rtol=1e-14)
    pid.reset()
    gus.reset()
    np.testing.assert_array_equal(pid.history, [1.0, 1.0])
    np.testing.assert_array_equal(gus.history, [0.0, 1.0])


def test_gustafsson_first_step_and_rejections_equal_i(rng):
    settings = settings_for()
    gus, i_device = harness("gustafsson", settings), harness("i", settings)
    i_device.reset()
    for target in 10.0 ** rng.uniform(-6, 2, size=40):
        step = make_step(rng, settings, target, np.float64)
        dt = 10.0 ** rng.uniform(-4, -1)
        gus.reset()
        assert gus(dt, *step) == i_device(dt, *step)  # first step
    gus.reset()
    gus(0.01, *make_step(rng, settings, 0.3, np.float64))  # history now set
    for target in 10.0 ** rng.uniform(0.01, 2, size=20):
        step = make_step(rng, settings, target, np.float64)
        assert gus(0.02, *step) == i_device(0.02, *step)  # every rejection


def test_gustafsson_prediction_engages_when_the_error_grows(rng):
    settings = settings_for()
    gus, i_device = harness("gustafsson", settings), harness("i", settings)
    gus.reset()
    i_device.reset()
    ref = Reference("gustafsson", settings)
    first = make_step(rng, settings, 0.05, np.float64)
    second = make_step(rng, settings, 0.6, np.float64)
    gus(0.01, *first)
    ref(0.01, *first)
    got = gus(0.01, *second)
    assert got[0] and got[1] < i_device(0.01, *second)[1]  # prediction is smaller
    norm_2 = reference_norm(*second, settings.atol, settings.rtol)
    norm_1 = reference_norm(*first, settings.atol, settings.rtol)
    hand = 0.9 * (0.01 / 0.01) * (norm_1 / norm_2) ** 0.2 * norm_2 ** -0.2
    assert got[1] == pytest.approx(0.01 * hand, rel=RTOL)
    assert got == (True, pytest.approx(ref(0.01, *second)[1], rel=RTOL))


# ------------------------------------------------------------------- settings
def test_per_state_helper():
    assert per_state(1e-6, 3, "atol") == (1e-6, 1e-6, 1e-6)
    assert per_state([1, 2.5], 2, "atol") == (1.0, 2.5)
    assert per_state(np.array([0.0, 1e-3]), 2, "rtol") == (0.0, 1e-3)
    assert all(type(v) is float for v in per_state(np.float32(2), 2, "atol"))
    for bad, match in [
        ([1e-6, 1e-6], r"atol has 2 values but there are 3 states"),
        ([1e-6, -1.0, 1e-6], r"atol\[1\] must be finite and >= 0"),
        ([1e-6, np.inf, 1e-6], r"atol\[1\] must be finite"),
        (np.nan, r"atol\[0\] must be finite"),
        ("1e-6", "atol must be a real number or a sequence"),
        ([1e-6, "x", 1e-6], r"atol\[1\] must be a real number"),
        ([True, 1.0, 1.0], r"atol\[0\] must be a real number"),
    ]:
        with pytest.raises(ValueError, match=match):
            per_state(bad, 3, "atol")


def test_settings_normalise_and_compare():
    s = ControllerSettings(3, 4, atol=1e-6, rtol=[1e-3, 1e-4, 1e-5], precision="float32")
    assert s.atol == (1e-6,) * 3 and s.rtol == (1e-3, 1e-4, 1e-5)
    assert s.precision is np.float32 and s.target == "cpu"
    assert (s.dt_min, s.dt_max, s.safety, s.min_factor, s.max_factor) == (
        1e-12, math.inf, 0.9, 0.2, 10.0)
    assert s == ControllerSettings(3, 4, atol=np.full(3, 1e-6), rtol=(1e-3, 1e-4, 1e-5),
                                   precision=np.float32, safety=np.float64(0.9))
    assert hash(s) == hash(ControllerSettings(3, 4, atol=(1e-6,) * 3, rtol=(1e-3, 1e-4, 1e-5),
                                              precision=np.float32))


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"n_states": 0}, "n_states"),
        ({"n_states": 2.0}, "n_states"),
        ({"n_states": True}, "n_states"),
        ({"error_order": 0}, "error_order"),
        ({"error_order": 4.0}, "error_order"),
        ({"atol": (1e-6, 1e-6)}, "atol"),
        ({"atol": -1.0}, "atol"),
        ({"rtol": np.nan}, "rtol"),
        ({"rtol": (1e-3,) * 5}, "rtol"),
        ({"atol": (0.0, 1e-6, 1e-6), "rtol": (0.0, 1e-3, 1e-3)}, r"atol\[0\] and rtol\[0\]"),
        ({"dt_min": -1e-3}, "dt_min"),
        ({"dt_min": math.inf}, "dt_min"),
        ({"dt_max": 0.0}, "dt_max"),
        ({"dt_max": np.nan}, "dt_max"),
        ({"dt_min": 1.0, "dt_max": 0.5}, "dt_max"),
        ({"safety": 0.0}, "safety"),
        ({"safety": 1.5}, "safety"),
        ({"safety": "high"}, "safety"),
        ({"min_factor": 0.0}, "min_factor"),
        ({"min_factor": 1.2}, "min_factor"),
        ({"max_factor": 0.5}, "max_factor"),
        ({"max_factor": math.inf}, "max_factor"),
        ({"kp": np.nan}, "kp"),
        ({"ki": "0.3"}, "ki"),
        ({"kd": math.inf}, "kd"),
        ({"precision": np.int32}, "precision"),
        ({"target": "gpu"}, "target"),
    ],
)
def test_settings_validation_names_the_field(overrides, field):
    values = dict(n_states=3, error_order=4)
    values.update(overrides)
    with pytest.raises(ValueError, match=field):
        ControllerSettings(**values)


def test_make_controller_names_and_errors():
    assert CONTROLLER_NAMES == ("fixed", "i", "pi", "pid", "gustafsson")
    assert set(CONTROLLERS) == set(CONTROLLER_NAMES)
    with pytest.raises(ValueError, match="'fixed', 'i', 'pi', 'pid', 'gustafsson'"):
        make_controller("PID", settings_for(), BufferRegistry())
    for name in ADAPTIVE:
        with pytest.raises(ValueError, match="error_order"):
            make_controller(name, settings_for(error_order=None), BufferRegistry())
    make_controller("fixed", settings_for(error_order=None), BufferRegistry())
    for name, gain, value in [("i", "kp", 0.3), ("i", "ki", 0.5), ("pi", "kd", 0.1),
                              ("gustafsson", "kp", 0.4), ("fixed", "ki", 1.0)]:
        with pytest.raises(ValueError, match=gain):
            make_controller(name, settings_for(**{gain: value}), BufferRegistry())
    # gains equal to the definition are fine
    make_controller("i", settings_for(kp=0.0, ki=1.0, kd=0.0), BufferRegistry())
    with pytest.raises(TypeError, match="ControllerSettings"):
        make_controller("i", {"n_states": 3}, BufferRegistry())


def test_default_controller_for_tableaus():
    for tableau in TABLEAUS.values():
        expected = "pi" if tableau.adaptive else "fixed"
        assert default_controller_for(tableau) == expected
    assert default_controller_for(TABLEAUS["rk4"]) == "fixed"
    assert default_controller_for(TABLEAUS["dormand_prince_54"]) == "pi"


# ------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", CONTROLLER_NAMES)
def test_history_buffer_registered_under_the_controller(name):
    registry = BufferRegistry()
    ctrl = make_controller(name, settings_for(n_states=7, atol=1e-6, rtol=1e-3), registry)
    history = registry.buffers(ctrl)["history"]
    assert (history.size, history.location, history.persistent) == (
        HISTORY_SIZES[name], "local", True)
    assert registry.persistent_local_buffer_size(ctrl) == HISTORY_SIZES[name]
    assert registry.shared_buffer_size(ctrl) == 0
    assert registry.local_buffer_size(ctrl) == 0
    parent = object()
    registry.register("state", parent, 7)
    registry.register_child(parent, ctrl, "controller")
    assert registry.persistent_local_buffer_size(parent) == HISTORY_SIZES[name]
    assert registry.persistent_region_size(parent, "cpu") == 7 + HISTORY_SIZES[name]


def test_compiled_lazily_and_rebuilt_on_change(rng):
    registry = BufferRegistry()
    ctrl = make_controller("pi", settings_for(), registry)
    assert ctrl.build_count == 0
    first = ctrl.device_function
    assert ctrl.device_function is first and ctrl.build_count == 1
    assert ctrl.reset_function is not None and ctrl.build_count == 1
    ctrl.update_compile_settings(safety=0.9)  # same value: no rebuild
    assert ctrl.device_function is first
    ctrl.update_compile_settings(safety=0.5)
    assert ctrl.device_function is not first and ctrl.build_count == 2
    with pytest.raises(ValueError, match="kd"):
        ctrl.update_compile_settings(kd=0.2)


# ------------------------------------------------------------- cuda targets
def _sequence_kernel(control, reset):
    def kernel(dts, states, proposed, errors, accepts, dt_next, shared, persistent):
        if cuda.grid(1) != 0:
            return
        reset(shared, persistent, 0)
        h = cuda.local.array(1, numba.float64)
        verdict = cuda.local.array(1, numba.int32)
        proposal = cuda.local.array(1, numba.float64)
        clamped = cuda.local.array(1, numba.int32)
        clamped[0] = 0
        for i in range(dts.shape[0]):
            h[0] = dts[i]
            control(h, clamped, states[i], proposed[i], errors[i], verdict, proposal, shared, persistent)
            accepts[i] = verdict[0]
            dt_next[i] = proposal[0]

    return kernel


def _cuda_matches_cpu(name, precision, rng):
    settings = settings_for(precision, dt_max=0.05)
    steps = random_sequence(rng, settings, 40, precision)
    states, proposed, errors = (np.ascontiguousarray([s[j] for s in steps]) for j in range(3))
    dts = (10.0 ** rng.uniform(-5, -1, size=len(steps))).astype(precision)  # as the loop hands them
    registry = BufferRegistry()
    ctrl = make_controller(name, attrs.evolve(settings, target="cuda"), registry)
    persistent = np.zeros(max(registry.persistent_region_size(ctrl, "cuda"), 1), precision)
    shared = np.zeros(1, precision)
    kernel = cuda.jit(_sequence_kernel(ctrl.device_function, ctrl.reset_function))
    accepts = np.zeros(len(steps), np.int32)
    dt_next = np.zeros(len(steps))
    kernel[1, 1](dts, states, proposed, errors, accepts, dt_next, shared, persistent)
    device = harness(name, settings)
    device.reset()
    for i, step in enumerate(steps):
        accept, want = device(dts[i], *step)
        assert bool(accepts[i]) == accept, f"step {i}"
        assert dt_next[i] == pytest.approx(want, rel=RTOL), f"step {i}"


@pytest.mark.cudasim
@pytest.mark.parametrize("precision", PRECISIONS, ids=lambda p: np.dtype(p).name)
@pytest.mark.parametrize("name", CONTROLLER_NAMES)
def test_cuda_simulator_matches_cpu(name, precision, rng):
    _cuda_matches_cpu(name, precision, rng)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", PRECISIONS, ids=lambda p: np.dtype(p).name)
@pytest.mark.parametrize("name", CONTROLLER_NAMES)
def test_gpu_matches_cpu(name, precision, rng):
    _cuda_matches_cpu(name, precision, rng)


@pytest.mark.ptx
@pytest.mark.parametrize("precision", PRECISIONS, ids=lambda p: np.dtype(p).name)
def test_controllers_compile_to_ptx(precision):
    from numba import types

    from cubie_kernel import cuda_target

    real = getattr(types, np.dtype(precision).name)
    signature = types.void(
        types.float64[::1], real[:, ::1], real[:, ::1], real[:, ::1],
        types.int32[::1], types.float64[::1], real[::1], real[::1],
    )
    for name in CONTROLLER_NAMES:
        ctrl = make_controller(name, settings_for(precision, target="cuda"), BufferRegistry())
        ptx = cuda_target.compile_ptx(
            _sequence_kernel(ctrl.device_function, ctrl.reset_function), signature, cc=(8, 0)
        )
        assert ".entry" in ptx


@pytest.mark.parametrize("name", ["pi", "pid", "gustafsson"])
def test_a_clamped_step_leaves_the_history_alone(name):
    """A step shortened to land on a time (end of the warm-up or of the run) has a
    small error that says nothing about the step size: it is accepted and sized
    like any other, but never enters the history."""
    settings = settings_for(dt_max=0.05)
    device = harness(name, settings)
    state, proposed = np.ones(4), np.ones(4)
    device.reset()
    device(0.01, state, proposed, np.full(4, 3e-7))  # an ordinary accepted step
    before = device.history.copy()
    accepted, h_next = device(0.001, state, proposed, np.full(4, 1e-15), clamped=True)
    assert accepted
    np.testing.assert_array_equal(device.history, before)
    device(0.001, state, proposed, np.full(4, 1e-15))  # the same step, not clamped
    assert not np.array_equal(device.history, before)
