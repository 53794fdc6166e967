"""The activation registry: phi, phi' and phi'' once, for every backend.

Each entry holds
* ``phi``, ``dphi``, ``d2phi``: functions of (x, a), ``a`` the activation's
  parameter (leaky slope, ELU alpha; ignored by the others), written with NumPy
  ufuncs and boolean masks so that they run on arrays in the NumPy engine and
  in theory code, and on scalars inside Numba kernels (``register_jitable``);
* ``c``: the same three as C expressions in ``x`` and ``a`` (double precision,
  <math.h> names), pasted into the CUDA kernels;
* ``kinks``: where phi, phi' or phi'' jump (for the theory's quadrature),
  as a function of ``a``;
* ``homogeneous``: phi(s x) = s phi(x) for s > 0, so pre-activations can be
  renormalised every layer without changing phi' (DESIGN.md 2.3c);
* ``kernel_phi``, ``kernel_dphi`` (optional): phi and phi' as the compiled
  (Numba) kernels evaluate them, when a faster form exists that agrees with
  ``phi``/``dphi`` to the run's rounding (tanh: ``tanh_f32`` in float32 runs,
  where libm's tanhf is a scalar call that blocks vectorisation); by default
  ``phi`` and ``dphi`` themselves.

Adding an activation is one ``register(...)`` call in this file.
"""

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special

from .numba_optional import overload, pow2_f32, register_jitable, types

SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
INV_SQRT_2PI = 0.3989422804014327
TWO_OVER_SQRT_PI = 1.1283791670955126
INV_SQRT2 = 0.7071067811865476


def erf(x):
    """Error function on arrays (SciPy's; CuPy's on CuPy arrays) and, through the
    overload below, on Numba scalars."""
    if type(x).__module__.startswith("cupy"):
        from cupyx.scipy import special as device_special

        return device_special.erf(x)
    return special.erf(x)


@overload(erf)
def _erf_numba(x):
    if isinstance(x, types.Float):
        return lambda x: math.erf(x)
    return None


@dataclass(frozen=True)
class Activation:
    name: str
    phi: object
    dphi: object
    d2phi: object
    c: dict
    default_param: float = 0.0
    kinks: object = lambda a: ()
    homogeneous: bool = False
    aliases: tuple = field(default=())
    param_range: tuple = None  # (low, high]: the parameters allowed
    moments: object = None  # closed-form (E[phi(sqrt(q) z)^2], E[phi'(sqrt(q) z)^2]) of (q, a)
    mlp_theory: bool = True  # False: theory.meanfield refuses it (its quadrature is inaccurate)
    kernel_phi: object = None  # phi as the Numba kernels evaluate it (default: phi)
    kernel_dphi: object = None  # phi' as the Numba kernels evaluate it (default: dphi)

    @property
    def takes_param(self):
        return self.default_param != 0.0


REGISTRY: dict = {}


def register(name, phi, dphi, d2phi, c, kernel_phi=None, kernel_dphi=None, **kw):
    """Add an activation; the three functions become usable inside Numba kernels."""
    phi, dphi = register_jitable(phi), register_jitable(dphi)
    act = Activation(
        name,
        phi,
        dphi,
        register_jitable(d2phi),
        c,
        kernel_phi=register_jitable(kernel_phi) if kernel_phi else phi,
        kernel_dphi=register_jitable(kernel_dphi) if kernel_dphi else dphi,
        **kw,
    )
    REGISTRY[name] = act
    for alias in act.aliases:
        REGISTRY[alias] = act
    return act


# tanh_f32: float32 tanh that LLVM vectorises over 8 float32 lanes, in float32
# arithmetic (no FMA, no calls, no branches: selects only), |x| clamped to 10
# first (inf and NaN too; NaN is restored at the end; tanh(x) rounds to 1 in
# float32 for |x| >= 9.011):
#
# * |x| < 5/8:  tanh x = x + x z P(z), z = x^2, P of degree 6: the least-squares
#   fit of (tanh x - x) / x^3 on 4,000 Chebyshev nodes of z in [0, 25/64],
#   weighted by x^3 / tanh x (the correction's share of the result), rounded to
#   float32;
# * else:       tanh x = 1 - 2 / (1 + E), E = e^{2x} = 2^k p(r), k = rint(2x / ln 2),
#   r = (2x - k LN2_HI) - k LN2_LO (k LN2_HI exact: 15 significant bits times
#   k <= 29; the subtraction exact by Sterbenz), p the same kind of fit of e^r on
#   |r| <= ln 2 / 2 (degree 6), 2^k exact (numba_optional.pow2_f32).
#
# Every float32 is within 1 ulp of the correctly rounded tanh (test_tanh_f32.py
# checks every one). It replaced a float64 evaluation (4 lanes, a Taylor exp and
# six squarings) that was ~2x slower per element, at the same accuracy bound.
_TANH_SPLIT = np.float32(0.625)
_TANH_CLAMP = np.float32(10.0)
_TANH_ONE = np.float32(9.011)  # from here on tanh rounds to 1 (26 ln(2) / 2 = 9.0109...)
# Coefficients, lowest degree first: P (small branch) and p (e^r).
_TANH_P = tuple(
    np.float32(v)
    for v in (-0.33333334, 0.13333325, -0.053966433, 0.021850154, -0.008751771,
              0.0032292202, -0.0008034716)
)  # fmt: skip
_EXP_P = tuple(
    np.float32(v)
    for v in (1.0, 1.0, 0.4999999, 0.16666421, 0.04166836, 0.008374771, 0.0013829421)
)  # fmt: skip
_LN2_HI = np.float32(0.69314575)  # 0x3F317200
_LN2_LO = np.float32(1.4286068e-06)
_LOG2E = np.float32(1.442695)
_F1, _F2 = np.float32(1.0), np.float32(2.0)


@register_jitable(inline="always")
def _horner7(x, c):
    """c[0] + x (c[1] + x (... + x c[6])) for a 7-tuple c, in c's precision (written
    out: a loop over the tuple is not unrolled, and the kernels' loops then do not
    vectorise as well)."""
    p = c[6]
    p = p * x + c[5]
    p = p * x + c[4]
    p = p * x + c[3]
    p = p * x + c[2]
    p = p * x + c[1]
    return p * x + c[0]


@register_jitable(inline="always")
def _tanh_f32(x):
    a = abs(x)
    c = a if a < _TANH_CLAMP else _TANH_CLAMP  # NaN and inf -> 10 (NaN restored below)
    z = c * c
    p = _horner7(z, _TANH_P)
    small = c + c * (z * p)
    y = c + c
    k = np.rint(y * _LOG2E)
    r = (y - k * _LN2_HI) - k * _LN2_LO
    e = _horner7(r, _EXP_P) * pow2_f32(k)
    big = _F1 - _F2 / (_F1 + e)
    t = small if c < _TANH_SPLIT else big
    t = _F1 if c >= _TANH_ONE else t
    t = np.float32(math.copysign(t, x))
    return x if x != x else t


def tanh_f32(x):
    """tanh in float32 as the Numba kernels compute it (see above): at most 1 ulp
    from the correctly rounded tanh. In NumPy (arrays): np.tanh in the input's dtype."""
    return np.tanh(x)


@overload(tanh_f32)
def _tanh_f32_numba(x):
    if x == types.float32:
        return lambda x: _tanh_f32(x)
    if isinstance(x, types.Float):
        return lambda x: np.tanh(x)
    return None


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


_sigmoid = register_jitable(_sigmoid)

register(
    "tanh",
    lambda x, a: np.tanh(x),
    lambda x, a: 1.0 - np.tanh(x) ** 2,
    lambda x, a: -2.0 * np.tanh(x) * (1.0 - np.tanh(x) ** 2),
    c=dict(
        phi="tanh(x)",
        dphi="1.0 - tanh(x) * tanh(x)",
        d2phi="-2.0 * tanh(x) * (1.0 - tanh(x) * tanh(x))",
    ),
    kernel_phi=lambda x, a: tanh_f32(x),
    kernel_dphi=lambda x, a: 1.0 - tanh_f32(x) ** 2,
)
register(
    "relu",
    lambda x, a: np.maximum(x, 0.0),
    lambda x, a: (x > 0.0) * 1.0,
    lambda x, a: x * 0.0,
    c=dict(phi="(x > 0.0 ? x : 0.0)", dphi="(x > 0.0 ? 1.0 : 0.0)", d2phi="0.0"),
    kinks=lambda a: (0.0,),
    homogeneous=True,
)
register(
    "leaky_relu",
    lambda x, a: np.maximum(x, 0.0) + a * np.minimum(x, 0.0),
    lambda x, a: (x > 0.0) * 1.0 + (x <= 0.0) * a,
    lambda x, a: x * 0.0,
    c=dict(phi="(x > 0.0 ? x : a * x)", dphi="(x > 0.0 ? 1.0 : a)", d2phi="0.0"),
    default_param=0.01,
    kinks=lambda a: (0.0,),
    homogeneous=True,
)
# alpha-ReLU (Yang & Schoenholz 2017): phi = max(x, 0)^a with 1/2 < a <= 1, for which
# E[phi'^2] is finite. phi' ~ x^(a-1) is unbounded at 0+, which the quadrature rules
# of ``theory`` do not resolve, so its theory is the closed-form moments
#   E[phi(sqrt(q) z)^2] = q^a M(2a),  E[phi'(sqrt(q) z)^2] = a^2 q^(a-1) M(2a - 2),
#   M(p) = E[z^p; z > 0] = 2^(p/2 - 1) Gamma((p + 1)/2) / sqrt(pi),
# which are all the residual network's mean-field recursion needs. It has no MLP/RNN
# mean-field theory here (NaN in the analysis group). max(x, TINY) keeps
# phi'(0) = 0 * finite, not 0 * inf.
_TINY = 1e-30


def _half_moment(p):
    """E[z^p; z > 0] for z ~ N(0, 1), p > -1."""
    return 2.0 ** (p / 2.0 - 1.0) * math.gamma((p + 1.0) / 2.0) / math.sqrt(math.pi)


register(
    "relu_power",
    lambda x, a: (x > 0.0) * np.maximum(x, _TINY) ** a,
    lambda x, a: (x > 0.0) * a * np.maximum(x, _TINY) ** (a - 1.0),
    lambda x, a: (x > 0.0) * a * (a - 1.0) * np.maximum(x, _TINY) ** (a - 2.0),
    c=dict(
        phi="(x > 0.0 ? pow(x, a) : 0.0)",
        dphi="(x > 0.0 ? a * pow(x, a - 1.0) : 0.0)",
        d2phi="(x > 0.0 ? a * (a - 1.0) * pow(x, a - 2.0) : 0.0)",
    ),
    default_param=0.75,
    param_range=(0.5, 1.0),
    kinks=lambda a: (0.0,),
    moments=lambda q, a: (
        q**a * _half_moment(2.0 * a),
        a * a * q ** (a - 1.0) * _half_moment(2.0 * a - 2.0),
    ),
    mlp_theory=False,
)
register(
    "linear",
    lambda x, a: x * 1.0,
    lambda x, a: x * 0.0 + 1.0,
    lambda x, a: x * 0.0,
    c=dict(phi="x", dphi="1.0", d2phi="0.0"),
    homogeneous=True,
)
register(
    "elu",
    lambda x, a: (x > 0.0) * x + (x <= 0.0) * a * np.expm1(np.minimum(x, 0.0)),
    lambda x, a: (x > 0.0) * 1.0 + (x <= 0.0) * a * np.exp(np.minimum(x, 0.0)),
    lambda x, a: (x <= 0.0) * a * np.exp(np.minimum(x, 0.0)),
    c=dict(
        phi="(x > 0.0 ? x : a * expm1(x))",
        dphi="(x > 0.0 ? 1.0 : a * exp(x))",
        d2phi="(x > 0.0 ? 0.0 : a * exp(x))",
    ),
    default_param=1.0,
    kinks=lambda a: (0.0,),
)
register(
    "selu",
    lambda x, a: (
        SELU_LAMBDA * ((x > 0.0) * x + (x <= 0.0) * SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))
    ),
    lambda x, a: (
        SELU_LAMBDA * ((x > 0.0) * 1.0 + (x <= 0.0) * SELU_ALPHA * np.exp(np.minimum(x, 0.0)))
    ),
    lambda x, a: SELU_LAMBDA * (x <= 0.0) * SELU_ALPHA * np.exp(np.minimum(x, 0.0)),
    c=dict(
        phi=f"{SELU_LAMBDA!r} * (x > 0.0 ? x : {SELU_ALPHA!r} * expm1(x))",
        dphi=f"{SELU_LAMBDA!r} * (x > 0.0 ? 1.0 : {SELU_ALPHA!r} * exp(x))",
        d2phi=f"{SELU_LAMBDA!r} * (x > 0.0 ? 0.0 : {SELU_ALPHA!r} * exp(x))",
    ),
    kinks=lambda a: (0.0,),
)
register(
    "gelu",
    lambda x, a: 0.5 * x * (1.0 + erf(x * INV_SQRT2)),
    lambda x, a: 0.5 * (1.0 + erf(x * INV_SQRT2)) + x * INV_SQRT_2PI * np.exp(-0.5 * x * x),
    lambda x, a: INV_SQRT_2PI * np.exp(-0.5 * x * x) * (2.0 - x * x),
    c=dict(
        phi=f"0.5 * x * (1.0 + erf(x * {INV_SQRT2!r}))",
        dphi=f"0.5 * (1.0 + erf(x * {INV_SQRT2!r})) + x * {INV_SQRT_2PI!r} * exp(-0.5 * x * x)",
        d2phi=f"{INV_SQRT_2PI!r} * exp(-0.5 * x * x) * (2.0 - x * x)",
    ),
)
register(
    "silu",
    lambda x, a: x * _sigmoid(x),
    lambda x, a: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x))),
    lambda x, a: _sigmoid(x) * (1.0 - _sigmoid(x)) * (2.0 + x * (1.0 - 2.0 * _sigmoid(x))),
    c=dict(
        phi="x * (0.5 * (1.0 + tanh(0.5 * x)))",
        dphi="(0.5 * (1.0 + tanh(0.5 * x))) * (1.0 + x * (1.0 - 0.5 * (1.0 + tanh(0.5 * x))))",
        d2phi="(0.5 * (1.0 + tanh(0.5 * x))) * (1.0 - 0.5 * (1.0 + tanh(0.5 * x)))"
        " * (2.0 + x * (1.0 - (1.0 + tanh(0.5 * x))))",
    ),
    aliases=("swish",),
)
register(
    "softplus",
    lambda x, a: np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x))),
    lambda x, a: _sigmoid(x),
    lambda x, a: _sigmoid(x) * (1.0 - _sigmoid(x)),
    c=dict(
        phi="fmax(x, 0.0) + log1p(exp(-fabs(x)))",
        dphi="0.5 * (1.0 + tanh(0.5 * x))",
        d2phi="(0.5 * (1.0 + tanh(0.5 * x))) * (1.0 - 0.5 * (1.0 + tanh(0.5 * x)))",
    ),
)
register(
    "sigmoid",
    lambda x, a: _sigmoid(x),
    lambda x, a: _sigmoid(x) * (1.0 - _sigmoid(x)),
    lambda x, a: _sigmoid(x) * (1.0 - _sigmoid(x)) * (1.0 - 2.0 * _sigmoid(x)),
    c=dict(
        phi="0.5 * (1.0 + tanh(0.5 * x))",
        dphi="(0.5 * (1.0 + tanh(0.5 * x))) * (1.0 - 0.5 * (1.0 + tanh(0.5 * x)))",
        d2phi="(0.5 * (1.0 + tanh(0.5 * x))) * (1.0 - 0.5 * (1.0 + tanh(0.5 * x)))"
        " * (1.0 - (1.0 + tanh(0.5 * x)))",
    ),
)
register(
    "erf",
    lambda x, a: erf(x),
    lambda x, a: TWO_OVER_SQRT_PI * np.exp(-x * x),
    lambda x, a: -2.0 * x * TWO_OVER_SQRT_PI * np.exp(-x * x),
    c=dict(
        phi="erf(x)",
        dphi=f"{TWO_OVER_SQRT_PI!r} * exp(-x * x)",
        d2phi=f"-2.0 * x * {TWO_OVER_SQRT_PI!r} * exp(-x * x)",
    ),
)
register(
    "hard_tanh",
    lambda x, a: np.minimum(np.maximum(x, -1.0), 1.0),
    lambda x, a: (np.abs(x) < 1.0) * 1.0,
    lambda x, a: x * 0.0,
    c=dict(
        phi="fmin(fmax(x, -1.0), 1.0)",
        dphi="(fabs(x) < 1.0 ? 1.0 : 0.0)",
        d2phi="0.0",
    ),
    kinks=lambda a: (-1.0, 1.0),
)


def names():
    """Canonical activation names (aliases left out)."""
    return sorted({act.name for act in REGISTRY.values()})


def act_takes_param(name):
    act = REGISTRY.get(name.strip())
    return act is not None and act.takes_param


def parse(label):
    """'tanh' -> (Activation, default param); 'leaky_relu(0.2)' -> (Activation, 0.2).

    Raises ValueError naming the allowed values.
    """
    text = str(label).strip()
    name, param = text, None
    if text.endswith(")") and "(" in text:
        name, _, rest = text[:-1].partition("(")
        try:
            param = float(rest)
        except ValueError:
            raise ValueError(f"bad activation parameter in {label!r}") from None
        if not act_takes_param(name):
            raise ValueError(f"activation {name.strip()!r} takes no parameter (in {label!r})")
        if not math.isfinite(param):
            raise ValueError(f"activation parameter in {label!r} must be finite")
    act = REGISTRY.get(name.strip())
    if act is None:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(names())}")
    if param is not None and act.param_range is not None:
        low, high = act.param_range
        if not low < param <= high:
            raise ValueError(
                f"the parameter of {act.name} must be in ({low:g}, {high:g}], got {param:g}"
            )
    return act, act.default_param if param is None else param


def label(act, param):
    """Canonical label: the name, with the parameter where the activation has one."""
    if not act.takes_param:
        return act.name
    return f"{act.name}({param:g})"
