"""Per-run status: one bit-flag enum, shared by device code and results.

The solver bits (``nonlinear_solver_failed``, ``linear_solver_failed``) come
with ``step_size_too_small`` or ``max_steps_exceeded``: a failed implicit
attempt is rejected and retried smaller, and only a run that stops that way
reports why its attempts failed.

Device code ORs plain ints (``int(RunStatus.X)``); results carry them as
``status(run)``, an int32 CF flag variable whose ``flag_masks`` /
``flag_values`` / ``flag_meanings`` are generated from this enum. A run
that fails never stops its batch: its status says why, and its outputs
after the failure are NaN.
"""

from __future__ import annotations

import enum

import numpy as np


class RunStatus(enum.IntFlag):
    """Why a run stopped early (no bit set: success).

    Every bit but ``TERMINATED_BY_EVENT`` is a failure (:data:`FAILURE_MASK`):
    a run ended by a terminal event succeeded.
    """

    MAX_STEPS_EXCEEDED = 1
    STEP_SIZE_TOO_SMALL = 2
    NONFINITE_STATE = 4
    NONLINEAR_SOLVER_FAILED = 8  # implicit stages: Newton diverged or did not converge
    LINEAR_SOLVER_FAILED = 16  # implicit steps: a singular or non-finite matrix
    TOO_MANY_RESETS = 32  # events reset the state max_resets times (chattering)
    TERMINATED_BY_EVENT = 64  # not a failure: a terminal event ended the run

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    RunStatus.MAX_STEPS_EXCEEDED: "the run took max_steps steps before reaching its end time",
    RunStatus.STEP_SIZE_TOO_SMALL: "the step-size controller asked for a step below dt_min",
    RunStatus.NONFINITE_STATE: "the state became inf or NaN",
    RunStatus.NONLINEAR_SOLVER_FAILED: (
        "the nonlinear (Newton) solver of an implicit step did not converge, and the step "
        "shrank until the run stopped"
    ),
    RunStatus.LINEAR_SOLVER_FAILED: (
        "the linear system of an implicit step was singular or not finite (a non-finite "
        "Jacobian, or W = I / (h gamma) - J singular), and the step shrank until the run stopped"
    ),
    RunStatus.TOO_MANY_RESETS: (
        "event resets fired max_resets times (chattering, e.g. Zeno behaviour of a bouncing "
        "ball coming to rest); raise max_resets or end the run with a terminal event"
    ),
    RunStatus.TERMINATED_BY_EVENT: "a terminal event ended the run (not a failure)",
}

#: Bits that say a run ended normally.
SUCCESS_BITS = int(RunStatus.TERMINATED_BY_EVENT)

#: Every known bit together.
KNOWN_MASK = int(sum(int(m) for m in RunStatus))

#: Every failure bit together.
FAILURE_MASK = KNOWN_MASK & ~SUCCESS_BITS


def status_attrs() -> dict:
    """CF attributes of the ``status`` variable.

    ``success`` is ``(status & FAILURE_MASK) == 0``; each bit (failures and
    ``terminated_by_event``) is ``(status & bit) == bit``, in the CF combined
    masks-and-values form.
    """
    meanings = ["success"] + [m.name.lower() for m in RunStatus]
    masks = [FAILURE_MASK] + [int(m) for m in RunStatus]
    values = [0] + [int(m) for m in RunStatus]
    return {
        "long_name": "run status",
        "flag_masks": np.array(masks, dtype=np.int32),
        "flag_values": np.array(values, dtype=np.int32),
        "flag_meanings": " ".join(meanings),
        "comment": (
            "0 is success; other values are ORed bits, see flag_meanings; every bit but "
            "terminated_by_event is a failure"
        ),
    }


def decode_status(value: int) -> list[str]:
    """Meanings of one status value, e.g. ``["nonfinite_state"]``, ``["success"]``
    or ``["success", "terminated_by_event"]``."""
    value = int(value)
    if value & ~KNOWN_MASK:
        raise ValueError(f"status {value} has bits outside the known flags ({KNOWN_MASK})")
    found = [m.name.lower() for m in RunStatus if value & int(m)]
    if not value & FAILURE_MASK:
        found.insert(0, "success")
    return found


class RunFailedError(RuntimeError):
    """Raised by :func:`raise_on_failure` when some runs did not succeed."""


def raise_on_failure(result) -> None:
    """Raise :class:`RunFailedError` if any run of a result failed.

    ``result`` is a Dataset with a ``status`` variable. The message counts
    failures per flag and names the first failing run.
    """
    status = np.asarray(result["status"].values).ravel()
    failed = np.flatnonzero(status & FAILURE_MASK)
    if failed.size == 0:
        return
    counts = {m.name.lower(): int(np.count_nonzero(status & int(m))) for m in RunStatus}
    summary = ", ".join(f"{k}: {v}" for k, v in counts.items() if v)
    raise RunFailedError(
        f"{failed.size} of {status.size} runs failed ({summary}); first failing run "
        f"index {int(failed[0])}: {', '.join(decode_status(status[failed[0]]))}"
    )
