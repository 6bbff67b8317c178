"""Rodas5P: Steinebach's stiffly accurate Rosenbrock method of order 5(4).

Properties
----------
- Order 5, 8 stages (8 function evaluations, one Jacobian and one LU per
  step); L-stable and stiffly accurate (the last two stages are the
  solution's and the error estimate's increments).
- Embedded order 4.
- Continuous extension of order 4:
  ``y(theta) = (1 - theta) y0 + theta (y1 + (1 - theta) (H1 + theta (H2 + theta H3)))``.
- Rodas5 re-derived with the order conditions of W-methods of order 3 and
  better accuracy of the interpolant and on index-1 DAEs.

Coefficients in the transformed form, to 16-17 digits as published with
the method (and in Julia's OrdinaryDiffEq); the tableau checks the order
conditions up to order 4 to that precision (order 5 is checked
empirically by the convergence tests).

Reference
---------
G. Steinebach, "Construction of Rosenbrock-Wanner method Rodas5P and
numerical benchmarks within the Julia Differential Equations package",
BIT Numer. Math. 63, 27 (2023). doi:10.1007/s10543-023-00967-x
"""

from fractions import Fraction as F

from cubie_kernel.algorithms.rosenbrock_tableau import RosenbrockTableau

_A6 = ["-7.502846399306121", "2.561846144803919", "-11.627539656261098",
       "-0.18268767659942256", "0.030198172008377946"]
_M = [*_A6, 1, 1, 1]
_H2 = ["25.948786856663858", "-2.5579724845846235", "10.433815404888879",
       "-2.3679251022685204", "0.524948541321073", "1.1241088310450404",
       "0.4272876194431874", "-0.17202221070155493"]
_H3 = ["-9.91568850695171", "-0.9689944594115154", "3.0438037242978453",
       "-24.495224566215796", "20.176138334709044", "15.98066361424651",
       "-6.789040303419874", "-6.710236069923372"]
_H4 = ["11.419903575922262", "2.8879645146136994", "72.92137995996029",
       "80.12511834622643", "-52.072871366152654", "-59.78993625266729",
       "-0.15582684282751913", "4.883087185713722"]


def _dense_row(m, h2, h3, h4):
    """``m theta + (theta - theta^2) (h2 + h3 theta + h4 theta^2)``."""
    m, h2, h3, h4 = F(m), F(h2), F(h3), F(h4)
    return [m + h2, h3 - h2, h4 - h3, -h4]


RODAS5P = RosenbrockTableau(
    name="rodas5p",
    gamma="0.21193756319429014",
    a=[
        [],
        ["3.0"],
        ["2.849394379747939", "0.45842242204463923"],
        ["-6.954028509809101", "2.489845061869568", "-10.358996098473584"],
        ["2.8029986275628964", "0.5072464736228206", "-0.3988312541770524",
         "-0.04721187230404641"],
        _A6,
        [*_A6, 1],
        [*_A6, 1, 1],
    ],
    C=[
        [],
        ["-14.155112264123755"],
        ["-17.97296035885952", "-2.859693295451294"],
        ["147.12150275711716", "-1.41221402718213", "71.68940251302358"],
        ["165.43517024871676", "-0.4592823456491126", "42.90938336958603",
         "-5.961986721573306"],
        ["24.854864614690072", "-3.0009227002832186", "47.4931110020768",
         "5.5814197821558125", "-0.6610691825249471"],
        ["30.91273214028599", "-3.1208243349937974", "77.79954646070892",
         "34.28646028294783", "-19.097331116725623", "-28.087943162872662"],
        ["37.80277123390563", "-3.2571969029072276", "112.26918849496327",
         "66.9347231244047", "-40.06618937091002", "-54.66780262877968",
         "-9.48861652309627"],
    ],
    c=[0, "0.6358126895828704", "0.4095798393397535", "0.9769306725060716",
       "0.4288403609558664", 1, 1, 1],
    d=["0.21193756319429014", "-0.42387512638858027", "-0.3384627126235924",
       "1.8046452872882734", "2.325825639765069", 0, 0, 0],
    m=_M,
    m_error=[0, 0, 0, 0, 0, 0, 0, 1],
    order=5,
    embedded_order=4,
    dense=[_dense_row(*row) for row in zip(_M, _H2, _H3, _H4)],
    dense_order=4,
    stiffly_accurate=True,
    description="Steinebach (2023): L-stable, stiffly accurate Rosenbrock 5(4) with a "
    "fourth-order continuous extension",
)
