"""ODE systems defined from equation strings.

>>> from cubie_kernel.systems import ODESystem, lorenz
>>> lorenz().state_names
('x', 'y', 'z')
"""

from cubie_kernel.systems.equations import (
    ALLOWED_FUNCTIONS as ALLOWED_FUNCTIONS,
    SystemDefinitionError as SystemDefinitionError,
)
from cubie_kernel.systems.examples import (
    exponential_decay as exponential_decay,
    harmonic_oscillator as harmonic_oscillator,
    kepler as kepler,
    lorenz as lorenz,
    robertson as robertson,
    van_der_pol as van_der_pol,
)
from cubie_kernel.systems.ode_system import ODESystem as ODESystem

__all__ = [
    "ALLOWED_FUNCTIONS",
    "ODESystem",
    "SystemDefinitionError",
    "exponential_decay",
    "harmonic_oscillator",
    "kepler",
    "lorenz",
    "robertson",
    "van_der_pol",
]
