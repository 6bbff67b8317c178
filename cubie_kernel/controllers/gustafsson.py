"""Gustafsson's predictive step-size controller, as coded in RADAU5.

With ``r_n`` the norm of this step (floored at
:data:`~cubie_kernel.controllers.base.NORM_FLOOR`), ``dt_acc`` and ``r_acc``
the step and norm of the previous ACCEPTED step and ``k = error_order + 1``::

    factor_i    = safety * r_n**(-1/k)                                   (elementary)
    factor_pred = safety * (dt / dt_acc) * (r_acc / r_n)**(1/k) * r_n**(-1/k)

On an accepted step with an accepted predecessor, ``factor = min(factor_i,
factor_pred)``: the prediction extrapolates the trend of the last two
steps, and the smaller of the two proposals is taken, as RADAU5 does. On the
run's first accepted step and on every rejected step the factor is
``factor_i`` (capped at 1 after a rejection), so on its first step the
controller equals ``"i"``. An accepted step that follows rejections still
predicts from the last accepted step, as in RADAU5.

Then ``factor`` is clamped to ``[min_factor, max_factor]`` and ``dt_next =
min(dt * factor, dt_max)``.

History (persistent, 2 elements, updated on accepted steps only):
``history[j] = dt_acc`` (0 until the first accepted step: "no
predecessor") and ``history[L + j] = max(r_acc, HISTORY_NORM_FLOOR)``
for lane ``j``; RADAU5
floors the stored norm at 1e-2 so that one very accurate step does not make
the next prediction explode.

References
----------
K. Gustafsson, "Control-theoretic techniques for stepsize selection in
implicit Runge-Kutta methods", ACM TOMS 20(4), 496-517, 1994.

E. Hairer, G. Wanner, *Solving Ordinary Differential Equations II*, 2nd
ed., Springer 1996, Sect. IV.8 (predictive step size control, and the code
RADAU5).
"""

from __future__ import annotations


import numpy as np

from cubie_kernel.controllers.base import StepController

#: Floor of the accepted norm kept for the next prediction (RADAU5's 1e-2).
HISTORY_NORM_FLOOR = 1e-2


class GustafssonController(StepController):
    """Predictive controller: history is the last accepted step and its norm."""

    name = "gustafsson"
    history_size = 2

    def check_settings(self, settings) -> None:
        super().check_settings(settings)
        for gain in ("kp", "ki", "kd"):
            if getattr(settings, gain) is not None:
                raise ValueError(
                    f"controller 'gustafsson' has no gains, got {gain}="
                    f"{getattr(settings, gain)!r}; use 'pi' or 'pid' to set gains"
                )

    def build_accepted_factor(self):
        s = self.compile_settings
        precision = np.dtype(s.precision).type
        inv_k = precision(1.0 / float(self.k))
        safety = precision(s.safety)
        history_floor = precision(HISTORY_NORM_FLOOR)
        zero = precision(0.0)

        def gustafsson_factor(dt, floored, dt_acc, r_acc):
            factor = safety * floored ** (-inv_k)
            if dt_acc > zero:
                ratio = r_acc / floored
                predicted = safety * (dt / dt_acc) * ratio**inv_k * floored ** (-inv_k)
                factor = min(factor, predicted)
            return factor, dt, max(floored, history_floor)

        return gustafsson_factor

    def build_reset(self, alloc_history):
        precision = np.dtype(self.compile_settings.precision).type
        zero, one = precision(0.0), precision(1.0)
        lanes = self.lanes

        def gustafsson_reset(shared, persistent, j):
            history = alloc_history(shared, persistent)
            history[j] = zero
            history[lanes + j] = one

        return gustafsson_reset
