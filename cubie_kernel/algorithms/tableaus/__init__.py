"""All tableaus known by name, with the names users know them by."""

from cubie_kernel.algorithms.rosenbrock_tableau import RosenbrockTableau
from cubie_kernel.algorithms.tableau import ButcherTableau
from cubie_kernel.algorithms.tableaus.bogacki_shampine import BOGACKI_SHAMPINE_32
from cubie_kernel.algorithms.tableaus.cash_karp import CASH_KARP_54
from cubie_kernel.algorithms.tableaus.classical_rk4 import CLASSICAL_RK4
from cubie_kernel.algorithms.tableaus.dormand_prince import DORMAND_PRINCE_54
from cubie_kernel.algorithms.tableaus.euler import EULER
from cubie_kernel.algorithms.tableaus.heun_euler import HEUN_EULER_21
from cubie_kernel.algorithms.tableaus.kvaerno3 import KVAERNO_3
from cubie_kernel.algorithms.tableaus.kvaerno5 import KVAERNO_5
from cubie_kernel.algorithms.tableaus.trbdf2 import TR_BDF2
from cubie_kernel.algorithms.tableaus.tsitouras import TSITOURAS_54
from cubie_kernel.algorithms.tableaus.rodas4 import RODAS4
from cubie_kernel.algorithms.tableaus.rodas5p import RODAS5P
from cubie_kernel.algorithms.tableaus.ros3p import ROS3P
from cubie_kernel.algorithms.tableaus.rosenbrock23 import ROSENBROCK_23
from cubie_kernel.algorithms.tableaus.verner import VERNER_65

#: Canonical name -> tableau (explicit methods, then Rosenbrock methods for stiff systems).
TABLEAUS: dict[str, ButcherTableau | RosenbrockTableau] = {
    t.name: t
    for t in (
        EULER,
        CLASSICAL_RK4,
        HEUN_EULER_21,
        BOGACKI_SHAMPINE_32,
        DORMAND_PRINCE_54,
        TSITOURAS_54,
        CASH_KARP_54,
        VERNER_65,
        ROSENBROCK_23,
        ROS3P,
        RODAS4,
        RODAS5P,
        KVAERNO_3,
        KVAERNO_5,
        TR_BDF2,
    )
}

#: Alias -> canonical name (names from scipy, Julia and textbooks), lower case.
ALIASES: dict[str, str] = {
    "explicit_euler": "euler",
    "classical_rk4": "rk4",
    "heun_euler_21": "heun_euler",
    "heuneuler": "heun_euler",
    "rk23": "bogacki_shampine_32",
    "bs3": "bogacki_shampine_32",
    "bogacki_shampine": "bogacki_shampine_32",
    "rk45": "dormand_prince_54",
    "dopri5": "dormand_prince_54",
    "dp5": "dormand_prince_54",
    "dormand_prince": "dormand_prince_54",
    "tsitouras": "tsit5",
    "tsitouras_54": "tsit5",
    "cashkarp": "cash_karp",
    "cash_karp_54": "cash_karp",
    "verner6": "vern6",
    "verner_65": "vern6",
    "ode23s": "rosenbrock23",
    "rosenbrock_23": "rosenbrock23",
    "kvaerno_3": "kvaerno3",
    "kvaerno_32": "kvaerno3",
    "kvaerno_5": "kvaerno5",
    "kvaerno_54": "kvaerno5",
    "tr_bdf2": "trbdf2",
    "ode23tb": "trbdf2",
}

#: Method used when an adaptive run names none (scipy's and MATLAB's default).
DEFAULT_ADAPTIVE_METHOD = "dormand_prince_54"


def method_names() -> list[str]:
    """Every accepted method name (canonical and aliases), sorted."""
    return sorted(set(TABLEAUS) | set(ALIASES))


def get_tableau(method: str) -> ButcherTableau | RosenbrockTableau:
    """Look a method up by name (case-insensitive).

    Raises
    ------
    ValueError
        Naming the unknown method and listing the accepted names.
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {type(method).__name__}")
    key = method.lower()
    key = ALIASES.get(key, key)
    try:
        return TABLEAUS[key]
    except KeyError:
        raise ValueError(
            f"method {method!r} is unknown; choose one of: {', '.join(method_names())}"
        ) from None
