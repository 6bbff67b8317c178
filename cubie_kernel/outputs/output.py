"""``Output``: what a run brings home, declared in one frozen object.

::

    Output(save_every=0.01)                        # every state and observable, every 0.01
    Output(states=["x"], observables=[], save_every=0.1)
    Output(states=[], observables=[], save_every=0.01,      # summaries only:
           summaries=["mean", "std", "max", "min", "peaks[4]"],
           summarise_every=10.0, final_state=True)

Samples are taken every ``save_every`` (and at the end); time series and
summary metrics both read them. Adaptive methods take their samples from
the step's continuous extension (dense output), so the steps do not depend
on ``save_every``; fixed-step methods land on each sample time.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import attrs

from cubie_kernel.outputs.metrics import BUILTIN_METRICS, Metric, MetricRequest, resolve_metric

#: Relative slack when checking that summarise_every is a multiple of save_every.
MULTIPLE_TOLERANCE = 1e-9

ALL = "all"


def _names(value: Any) -> str | tuple[str, ...]:
    if value is None or value == ALL:
        return ALL
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _metrics(value: Any) -> tuple[MetricRequest, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, Metric, MetricRequest)):
        value = (value,)
    requests = tuple(resolve_metric(v) for v in value)
    labels = [r.metric.name for r in requests]
    doubled = sorted({n for n in labels if labels.count(n) > 1})
    if doubled:
        raise ValueError(f"summaries: metric(s) {doubled} requested more than once")
    return requests


def _positive(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a finite number > 0 or None, got {value!r}")
    return float(value)


@attrs.frozen
class Output:
    """The outputs of every run of a solve.

    Parameters
    ----------
    states, observables
        Names saved as time series ``x(run, time)``: ``"all"`` (default), a
        list of names, or ``[]`` for none.
    save_every
        Sample interval. Time series rows and summary samples are taken at
        ``0, save_every, 2 save_every, ...`` after the warm-up, and at the
        end. None: only the end is saved (and no summaries can be taken).
    summaries
        Summary metrics: names of :data:`~cubie_kernel.outputs.metrics.BUILTIN_METRICS`
        (``"mean"``, ``"std"``, ``"rms"``, ``"max"``, ``"min"``,
        ``"max_magnitude"``, ``"time_of_max"``, ``"time_of_min"``,
        ``"peaks[K]"``, ``"negative_peaks[K]"``, ``"crossings"``,
        ``"dxdt_max"``, ``"dxdt_min"``) or :class:`~cubie_kernel.outputs.metrics.Metric`
        objects.
    summarise
        Variables the metrics apply to: ``"all"`` (every state and
        observable; derivative metrics apply to states only) or a list.
    summarise_every
        Window length, a multiple of ``save_every``; None: one window, the
        whole saved interval.
    final_state
        Also return the state at the end of each run as ``<state>_final(run)``.
    counters
        Cumulative accepted and rejected steps at every time series row.

    Raises
    ------
    ValueError
        Naming the field: an empty request (no time series, no summaries and
        no final state), summaries without ``save_every``, a window that is
        not a multiple of ``save_every``, an unknown metric.
    """

    states: str | tuple = attrs.field(default=ALL, converter=_names)
    observables: str | tuple = attrs.field(default=ALL, converter=_names)
    save_every: float | None = attrs.field(default=None)
    summaries: tuple = attrs.field(default=(), converter=_metrics)
    summarise: str | tuple = attrs.field(default=ALL, converter=_names)
    summarise_every: float | None = attrs.field(default=None)
    final_state: bool = False
    counters: bool = False

    def __attrs_post_init__(self):
        object.__setattr__(self, "save_every", _positive("save_every", self.save_every))
        object.__setattr__(self, "summarise_every", _positive("summarise_every", self.summarise_every))
        for name in ("final_state", "counters"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.states == () and self.observables == () and not self.summaries and not self.final_state:
            raise ValueError(
                "Output requests nothing: give states or observables to save, summaries, "
                "or final_state=True"
            )
        if self.summaries and self.save_every is None:
            raise ValueError("summaries need save_every: the interval their samples are taken at")
        if self.summarise_every is not None:
            if not self.summaries:
                raise ValueError("summarise_every is set but no summaries are requested")
            ratio = self.summarise_every / self.save_every
            if ratio < 1 - MULTIPLE_TOLERANCE or abs(ratio - round(ratio)) > MULTIPLE_TOLERANCE * ratio:
                raise ValueError(
                    f"summarise_every ({self.summarise_every}) must be a multiple of save_every "
                    f"({self.save_every})"
                )

    @property
    def samples_per_window(self) -> int:
        """Sample intervals per window; 0 for one window over the whole run."""
        if self.summarise_every is None:
            return 0
        return int(round(self.summarise_every / self.save_every))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Output":
        """An Output from a mapping of its fields (sweep files, the CLI).

        Raises ValueError naming unknown keys.
        """
        if isinstance(values, Output):
            return values
        if not isinstance(values, Mapping):
            raise ValueError(f"output must be a mapping of Output fields, got {values!r}")
        fields = [f.name for f in attrs.fields(cls)]
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"output: unknown field(s) {unknown}; allowed: {', '.join(fields)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values that round-trip through :meth:`from_dict` (JSON-able
        unless a summary is a user's :class:`Metric`, which is kept as is)."""
        return {
            "states": self.states if self.states == ALL else list(self.states),
            "observables": self.observables if self.observables == ALL else list(self.observables),
            "save_every": self.save_every,
            "summaries": [
                r.label if r.metric in BUILTIN_METRICS else r for r in self.summaries
            ],
            "summarise": self.summarise if self.summarise == ALL else list(self.summarise),
            "summarise_every": self.summarise_every,
            "final_state": self.final_state,
            "counters": self.counters,
        }

    def canonical(self) -> dict[str, Any]:
        """A JSON-able form for tokens: :meth:`to_dict`, with a user's metric
        spelled as its label and the module and name of its update function."""
        values = self.to_dict()
        values["summaries"] = [
            entry if isinstance(entry, str)
            else f"{entry.label}@{entry.metric.update.__module__}.{entry.metric.update.__qualname__}"
            for entry in values["summaries"]
        ]
        return values

    # ------------------------------------------------------------- resolution
    def resolve(self, system) -> "ResolvedOutput":
        """Indices into ``system``'s states and observables.

        Raises
        ------
        ValueError
            A name that is not a state or observable of ``system`` (naming the
            field and the allowed names).
        """
        states = _pick("states", self.states, system.state_names)
        observables = _pick("observables", self.observables, system.observable_names)
        if self.summarise == ALL:
            summarised = [("state", i) for i in range(system.n_states)] + [
                ("observable", i) for i in range(system.n_observables)
            ]
        else:
            summarised = []
            for name in self.summarise:
                if name in system.state_names:
                    summarised.append(("state", system.state_names.index(name)))
                elif name in system.observable_names:
                    summarised.append(("observable", system.observable_names.index(name)))
                else:
                    raise ValueError(
                        f"summarise: {name!r} is not a state or observable of system "
                        f"{system.name!r}; allowed: "
                        f"{', '.join(system.state_names + system.observable_names)}"
                    )
        slots = []
        slot = 0
        for kind, index in summarised:
            name = (system.state_names if kind == "state" else system.observable_names)[index]
            for request in self.summaries:
                if request.metric.uses_derivative and kind != "state":
                    continue
                slots.append(SummarySlots(name, kind, index, request, slot))
                slot += request.metric.n_results(request.option)
        return ResolvedOutput(self, tuple(states), tuple(observables), tuple(slots), slot)


def _pick(field: str, names, allowed: Sequence[str]) -> list[int]:
    if names == ALL:
        return list(range(len(allowed)))
    out = []
    for name in names:
        if name not in allowed:
            raise ValueError(
                f"{field}: {name!r} is not one of the system's {field} ({', '.join(allowed) or 'none'})"
            )
        out.append(list(allowed).index(name))
    return out


@attrs.frozen
class SummarySlots:
    """Where one (variable, metric) pair's results sit in the ``summaries`` output."""

    variable: str
    kind: str  # "state" or "observable"
    index: int
    request: MetricRequest
    first_slot: int


@attrs.frozen
class ResolvedOutput:
    """An :class:`Output` applied to one system: indices and slot layout."""

    output: Output
    states: tuple[int, ...]
    observables: tuple[int, ...]
    summary_slots: tuple[SummarySlots, ...]
    n_summary_slots: int

    @property
    def uses_derivative(self) -> bool:
        return any(s.request.metric.uses_derivative for s in self.summary_slots)

    @property
    def summarises_observables(self) -> bool:
        return any(s.kind == "observable" for s in self.summary_slots)


def n_windows(n_samples: int, samples_per_window: int) -> int:
    """Windows of a run with ``n_samples`` samples (see :mod:`~cubie_kernel.outputs.metrics`)."""
    if samples_per_window == 0 or n_samples <= 1:
        return 1
    return max(1, -(-(n_samples - 1) // samples_per_window))
