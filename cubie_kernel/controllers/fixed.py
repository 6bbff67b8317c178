"""The fixed-step controller: every step is accepted and the step never changes.

It completes the controller contract for methods without an embedded error
estimate; fixed-step loops need not call it at all. It has no history
(``history`` is registered with size 0) and ignores ``state``, ``proposed``
and ``error``.
"""

from __future__ import annotations

from cubie_kernel.controllers.base import StepController


class FixedController(StepController):
    """``control`` accepts every lane and keeps its step; ``reset`` does nothing."""

    name = "fixed"
    is_adaptive = False
    history_size = 0

    def check_settings(self, settings) -> None:
        super().check_settings(settings)
        for gain in ("kp", "ki", "kd"):
            if getattr(settings, gain) is not None:
                raise ValueError(
                    f"controller 'fixed' has no gains, got {gain}={getattr(settings, gain)!r}"
                )

    def build_control(self, error_norm, alloc_history):
        del error_norm, alloc_history

        lanes = self.lanes

        def fixed_control(h, clamped, state, proposed, error, accept, h_next, shared, persistent):
            for j in range(lanes):
                accept[j] = 1
                h_next[j] = h[j]

        return fixed_control

    def build_reset(self, alloc_history):
        del alloc_history

        def fixed_reset(shared, persistent, j):
            return None

        return fixed_reset
