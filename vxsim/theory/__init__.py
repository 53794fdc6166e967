"""Mean-field theory of deep random networks (DESIGN.md section 1), float64.

``point(label, sigma_w2, sigma_b2)`` and ``critical(label, sigma_b2)`` are the
one-call summaries; the pieces (``q_star``, ``chi1``, ``correlation_map``, ...) take
an activation as ``(act, param)``. ``gaussian`` holds the quadrature rules.
"""

from vxsim.theory.grid import grid
from vxsim.theory.meanfield import (
    NoFixedPoint,
    c_star,
    chi1,
    chi_c,
    correlation_map,
    critical,
    critical_line,
    critical_sigma_w2,
    depth_scale,
    iterate_length_map,
    length_map,
    length_map_slope,
    point,
    q_star,
    second_moment,
    xi_c,
    xi_q,
)

__all__ = [
    "NoFixedPoint",
    "c_star",
    "chi1",
    "chi_c",
    "correlation_map",
    "critical",
    "critical_line",
    "critical_sigma_w2",
    "depth_scale",
    "grid",
    "iterate_length_map",
    "length_map",
    "length_map_slope",
    "point",
    "q_star",
    "second_moment",
    "xi_c",
    "xi_q",
]
