"""The PID family of step-size controllers: I, PI and PID, one device function.

With the norms ``r_n`` of this step and ``r_{n-1}``, ``r_{n-2}`` of the two
previous ACCEPTED steps (floored at :data:`~cubie_kernel.controllers.base.NORM_FLOOR`)
and ``k = error_order + 1``, the factor is Soderlind's general digital
filter without step-ratio terms::

    factor = safety * r_n**(-b1/k) * r_{n-1}**(-b2/k) * r_{n-2}**(-b3/k)

    b1 = kp + ki + kd        b2 = -(kp + 2 kd)        b3 = kd

which is PID control of ``log r`` towards ``log 1``: ``ki`` weights the
error itself, ``kp`` its first difference, ``kd`` its second difference::

    log(factor / safety) = -(ki e_n + kp (e_n - e_{n-1}) + kd (e_n - 2 e_{n-1} + e_{n-2})) / k

with ``e_n = log r_n``. ``kp = kd = 0, ki = 1`` is exactly the elementary
("I") controller ``safety * r_n**(-1/k)`` of scipy's RK45, and the
Hairer-Wanner form ``r_n**(-alpha) r_{n-1}**beta`` is ``alpha = (kp + ki)/k``,
``beta = kp/k``. The relations between the gains and ``b1, b2, b3`` are those of
diffrax's ``PIDController`` (``pcoeff``, ``icoeff``, ``dcoeff``); a gain
triple maps to Soderlind's published ``k*beta`` coefficients through them.

Then ``factor`` is clamped to ``[min_factor, max_factor]`` and
``dt_next = min(dt * factor, dt_max)``. A REJECTED step uses the elementary
factor ``safety * r_n**(-1/k)`` clamped to ``[min_factor, 1]`` instead: the
filter's history of small accepted errors can outweigh a failure (with
H312PID's small ``b1`` a norm of 2 after norms of 1e-10 gives a factor
above 1), which would retry the same step forever.

Default gains
-------------
========  ======  =====  =====  ======================  ===========================
name      kp      ki     kd     k*beta (b1, b2, b3)     source
========  ======  =====  =====  ======================  ===========================
``i``     0       1      0      (1, 0, 0)               [HNW93]_ II.4; scipy RK45
``pi``    0.4     0.3    0      (0.7, -0.4, 0)          PI.3.4: [Gus91]_, [HW96]_ IV.2
``pid``   -2/9    2/9    1/18   (1/18, 1/9, 1/18)       H312PID: [Sod03]_
========  ======  =====  =====  ======================  ===========================

Other published choices, as ``(kp, ki, kd)``: PI.4.2 ``(0.2, 0.4, 0)``
([Sod02]_); H211PI ``(-1/6, 1/3, 0)`` ([Sod03]_). PI.3.4 is Gustafsson's
controller for explicit Runge-Kutta methods. H312PID is a low-pass filter
with a small integral gain (2/9): it smooths a noisy error sequence, but
reacts slowly to a poor initial step (a norm of 100 shrinks the step by only
~15% per rejection at k = 5).

History (lane ``j``): ``history[j] = r_{n-1}``, ``history[L + j] = r_{n-2}`` (``"pi"`` keeps
only the first, ``"i"`` none), reset to 1 at the start of each run (so the
first steps are I-steps with gain ``kp + ki + kd``) and shifted on
accepted steps only.

References
----------
.. [HNW93] E. Hairer, S. P. Norsett, G. Wanner, *Solving Ordinary
   Differential Equations I*, 2nd ed., Springer 1993, Sect. II.4.
.. [HW96] E. Hairer, G. Wanner, *Solving Ordinary Differential Equations
   II*, 2nd ed., Springer 1996, Sect. IV.2 (PI step size control).
.. [Gus91] K. Gustafsson, "Control theoretic techniques for stepsize
   selection in explicit Runge-Kutta methods", ACM TOMS 17(4), 533-554, 1991.
.. [Sod02] G. Soderlind, "Automatic control and adaptive time-stepping",
   Numerical Algorithms 31, 281-310, 2002.
.. [Sod03] G. Soderlind, "Digital filters in adaptive time-stepping",
   ACM TOMS 29(1), 1-26, 2003.
"""

from __future__ import annotations


import numpy as np

from cubie_kernel.controllers.base import StepController


class PIDController(StepController):
    """PID step-size controller (history: the two previous accepted norms).

    ``settings.kp``, ``ki``, ``kd`` left ``None`` take :attr:`DEFAULT_GAINS`.
    """

    name = "pid"
    history_size = 2
    #: (kp, ki, kd): Soderlind's H312PID.
    DEFAULT_GAINS = (-2.0 / 9.0, 2.0 / 9.0, 1.0 / 18.0)
    #: Gains this controller does not let the user set: name -> fixed value.
    FIXED_GAINS: dict[str, float] = {}

    def check_settings(self, settings) -> None:
        super().check_settings(settings)
        for gain, fixed in self.FIXED_GAINS.items():
            value = getattr(settings, gain)
            if value is not None and value != fixed:
                raise ValueError(
                    f"controller {self.name!r} has {gain} = {fixed:g} by definition, got "
                    f"{gain}={value!r}; use 'pid' to set all three gains"
                )

    @property
    def gains(self) -> tuple[float, float, float]:
        """The resolved ``(kp, ki, kd)``: settings, else :attr:`DEFAULT_GAINS`."""
        s = self.compile_settings
        given = (s.kp, s.ki, s.kd)
        return tuple(
            float(default if value is None else value)
            for value, default in zip(given, self.DEFAULT_GAINS)
        )

    @property
    def exponents(self) -> tuple[float, float, float]:
        """Exponents of ``(r_n, r_{n-1}, r_{n-2})`` in the factor."""
        kp, ki, kd = self.gains
        k = float(self.k)
        return -(kp + ki + kd) / k, (kp + 2.0 * kd) / k, -kd / k

    def build_accepted_factor(self):
        s = self.compile_settings
        precision = np.dtype(s.precision).type
        exp_now, exp_prev, exp_prev2 = (precision(e) for e in self.exponents)
        n_history = self.history_size
        safety = precision(s.safety)

        def pid_factor(dt, floored, h0, h1):
            factor = safety * floored**exp_now
            if n_history > 0:
                factor *= h0**exp_prev
            if n_history > 1:
                factor *= h1**exp_prev2
                h1 = h0
            if n_history > 0:
                h0 = floored
            return factor, h0, h1

        return pid_factor

    def build_reset(self, alloc_history):
        n_history = self.history_size
        one = np.dtype(self.compile_settings.precision).type(1.0)
        lanes = self.lanes

        def pid_reset(shared, persistent, j):
            history = alloc_history(shared, persistent)
            for i in range(n_history):
                history[i * lanes + j] = one

        return pid_reset


class PIController(PIDController):
    """PI step-size controller: PID with ``kd = 0`` (history: one norm)."""

    name = "pi"
    history_size = 1
    #: (kp, ki, kd): Gustafsson's PI.3.4.
    DEFAULT_GAINS = (0.4, 0.3, 0.0)
    FIXED_GAINS = {"kd": 0.0}


class IController(PIDController):
    """Elementary (integral) controller: PID with ``kp = kd = 0, ki = 1``."""

    name = "i"
    history_size = 0
    DEFAULT_GAINS = (0.0, 1.0, 0.0)
    FIXED_GAINS = {"kp": 0.0, "ki": 1.0, "kd": 0.0}
