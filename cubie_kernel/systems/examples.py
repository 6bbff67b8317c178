"""Built-in example systems.

Each factory returns an :class:`~cubie_kernel.systems.ODESystem`; keyword
arguments override the default parameter values.
"""

from __future__ import annotations

import math

from cubie_kernel.systems.ode_system import ODESystem


def lorenz(sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0) -> ODESystem:
    """The Lorenz (1963) system, chaotic for the default parameters.

    States ``x, y, z`` (defaults 1, 0, 0); parameters ``sigma, rho, beta``::

        dx = sigma*(y - x)
        dy = x*(rho - z) - y
        dz = x*y - beta*z
    """
    return ODESystem(
        equations=["dx = sigma*(y - x)", "dy = x*(rho - z) - y", "dz = x*y - beta*z"],
        states={"x": 1.0, "y": 0.0, "z": 0.0},
        parameters={"sigma": sigma, "rho": rho, "beta": beta},
        name="lorenz",
    )


def van_der_pol(mu: float = 1.0) -> ODESystem:
    """The Van der Pol oscillator; stiff for large ``mu``.

    States ``x, v`` (defaults 2, 0); parameter ``mu``::

        dx = v
        dv = mu*(1 - x**2)*v - x
    """
    return ODESystem(
        equations=["dx = v", "dv = mu*(1 - x**2)*v - x"],
        states={"x": 2.0, "v": 0.0},
        parameters={"mu": mu},
        name="van_der_pol",
    )


def exponential_decay(k: float = 1.0) -> ODESystem:
    """Exponential decay, ``y(t) = y0 * exp(-k t)``.

    State ``y`` (default 1); parameter ``k``::

        dy = -k*y
    """
    return ODESystem(
        equations=["dy = -k*y"],
        states={"y": 1.0},
        parameters={"k": k},
        name="exponential_decay",
    )


def harmonic_oscillator(omega: float = 1.0) -> ODESystem:
    """The harmonic oscillator, ``x(t) = cos(omega t)`` from the defaults.

    States ``x, v`` (defaults 1, 0); parameter ``omega``; observable
    ``energy`` (conserved)::

        dx = v
        dv = -omega**2*x
        energy = 0.5*(v**2 + omega**2*x**2)
    """
    return ODESystem(
        equations=["dx = v", "dv = -omega**2*x"],
        states={"x": 1.0, "v": 0.0},
        parameters={"omega": omega},
        observables=["energy = 0.5*(v**2 + omega**2*x**2)"],
        name="harmonic_oscillator",
    )


def kepler(eccentricity: float = 0.5, mu: float = 1.0) -> ODESystem:
    """The planar two-body (Kepler) problem with gravitational parameter ``mu``.

    States ``qx, qy, px, py`` start at pericentre of an orbit with semi-major
    axis 1 and the given eccentricity ``e`` (``0 <= e < 1``)::

        q = (1 - e, 0),   p = (0, sqrt(mu*(1 + e)/(1 - e)))

    so the period is ``2*pi/sqrt(mu)`` (for ``mu = 1``, ``p = (0,
    sqrt((1 + e)/(1 - e)))``). Parameter ``mu``; observable ``energy``
    (conserved, ``-mu/2``)::

        r = sqrt(qx**2 + qy**2)
        dqx = px
        dqy = py
        dpx = -mu*qx/r**3
        dpy = -mu*qy/r**3
        energy = 0.5*(px**2 + py**2) - mu/r
    """
    e = float(eccentricity)
    if not 0.0 <= e < 1.0:
        raise ValueError(f"kepler: eccentricity must be in [0, 1), got {eccentricity!r}")
    if not mu > 0:
        raise ValueError(f"kepler: mu must be positive, got {mu!r}")
    return ODESystem(
        equations=[
            "r = sqrt(qx**2 + qy**2)",
            "dqx = px",
            "dqy = py",
            "dpx = -mu*qx/r**3",
            "dpy = -mu*qy/r**3",
        ],
        states={"qx": 1.0 - e, "qy": 0.0, "px": 0.0,
                "py": math.sqrt(mu * (1.0 + e) / (1.0 - e))},
        parameters={"mu": mu},
        observables=["energy = 0.5*(px**2 + py**2) - mu/r"],
        name="kepler",
    )


def robertson(k1: float = 0.04, k2: float = 3.0e7, k3: float = 1.0e4) -> ODESystem:
    """Robertson's chemical kinetics: the classic stiff test (rates over 9 decades).

    Three species, ``A -> B`` (``k1``), ``2B -> B + C`` (``k2``), ``B + C -> A
    + C`` (``k3``), from ``(1, 0, 0)``; mass ``a + b + c`` is conserved.
    Explicit methods need ~1e5 steps per unit of ``t`` once ``b`` settles;
    use a Rosenbrock method (``method="rodas5p"``)::

        da = -k1*a + k3*b*c
        db = k1*a - k3*b*c - k2*b**2
        dc = k2*b**2
        mass = a + b + c

    H. H. Robertson, "The solution of a set of reaction rate equations", in
    Numerical Analysis: an Introduction, Academic Press (1966) 178-182.
    """
    return ODESystem(
        equations=[
            "da = -k1*a + k3*b*c",
            "db = k1*a - k3*b*c - k2*b**2",
            "dc = k2*b**2",
        ],
        states={"a": 1.0, "b": 0.0, "c": 0.0},
        parameters={"k1": k1, "k2": k2, "k3": k3},
        observables=["mass = a + b + c"],
        name="robertson",
    )
