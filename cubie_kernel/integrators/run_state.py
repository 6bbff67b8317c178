"""The per-run state of the loop, declared once.

Everything a run carries from one step attempt to the next lives in two
small lane-form arrays (field ``f`` of lane ``j`` at ``f * L + j``, see
:mod:`cubie_kernel.targets`), never in a driver's Python locals, so a target
can advance one run per thread (cuda, ``L = 1``) or a block of runs in
lockstep (cpu) with the same device functions:

``clock`` (float64)
    ``t`` the run's time, ``t_end`` the time the run must land on next (the
    next sample time with fixed steps; the end of the warm-up or of the run
    with dense output), ``h`` the step to try next, ``h_try`` the step being
    attempted (clamped to ``t_end``) and ``h_next`` the controller's
    proposal after it, ``t_sample`` the next sample time (dense output),
    ``t_prev`` the start of the last accepted step (dense output) and
    ``t_event`` the time an event cut the last step at. Steps of
    adaptive runs hold values of the run's precision (exact in float64).
``flags`` (int32)
    ``run`` the run a lane holds (-1: none), ``status`` its
    :class:`~cubie_kernel.status.RunStatus` bits, ``n_accepted`` and
    ``n_rejected`` its step counters, ``first_stage`` (0 for a run's first
    attempt, 1 after an accepted one, 2 after a rejected one: where an FSAL
    step finds its first stage, see :class:`~cubie_kernel.algorithms.erk_step.ERKStep`,
    and whether an implicit step's Jacobian is still valid), ``step_status``
    (the :class:`~cubie_kernel.status.RunStatus` bits of a failed attempt,
    set by implicit steps, ORed into ``status`` if the run then stops),
    ``after_reject`` (the last attempt was rejected), ``save_index`` (the
    next sample to take; -1 during the warm-up), ``last`` (this attempt
    lands on ``t_end``), ``accept`` (the controller's verdict), ``event``
    (what the settled attempt calls for), ``n_resets`` (event resets so
    far) and ``acted`` (what an event did to the last step).

The step-size controller's history is a registered buffer of the
controller (``history``), in the same lane form; later method families
(implicit stages, event records) add their per-run state the same way: a
registered buffer, or a field here.
"""

from __future__ import annotations

import numpy as np

#: float64 fields, in order.
CLOCK_FIELDS = ("t", "t_end", "h", "h_try", "h_next", "t_sample", "t_prev", "t_event")
#: int32 fields, in order.
FLAG_FIELDS = (
    "run", "status", "n_accepted", "n_rejected", "first_stage", "after_reject",
    "save_index", "last", "accept", "event", "step_status", "n_resets", "acted",
)

T, T_END, H, H_TRY, H_NEXT, T_SAMPLE, T_PREV, T_EVENT = range(len(CLOCK_FIELDS))
(RUN, STATUS, N_ACCEPTED, N_REJECTED, FIRST_STAGE, AFTER_REJECT, SAVE_INDEX, LAST, ACCEPT,
 EVENT, STEP_STATUS, N_RESETS, ACTED) = range(len(FLAG_FIELDS))

#: ``event`` values: what the lane's last attempt calls for (SAMPLED: an
#: accepted step passed the next sample time; TERMINATED: a terminal event
#: ended the run).
NO_EVENT, LANDED, FAILED, SAMPLED, TERMINATED = 0, 1, 2, 3, 4

#: ``acted`` values: what an event did to the lane's last step (cut at a
#: reset, cut at a terminal event, or the reset cap was reached).
NOT_ACTED, RESET, ENDED, RESET_LIMIT = 0, 1, 2, 3

CLOCK_DTYPE = np.float64
FLAGS_DTYPE = np.int32


def bytes_per_run() -> int:
    """Device bytes of one run's state words."""
    return len(CLOCK_FIELDS) * np.dtype(CLOCK_DTYPE).itemsize + len(FLAG_FIELDS) * np.dtype(
        FLAGS_DTYPE
    ).itemsize
