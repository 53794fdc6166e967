"""Weight laws: how the entries of a weight matrix are drawn (``network.init``).

Every law starts from the same counter-based standard-Gaussian matrix Z of
(seed, sample, layer, stream) that the Gaussian law uses as it is, and maps it
(in float64) to a matrix of **unit entry variance**, so W = sqrt(sigma_w2 / N) Z
keeps E[W_ij^2] = sigma_w2 / N whatever the law:

* ``gaussian``: Z itself (the engines never call its draw: their Gaussian path
  is untouched, bit for bit);
* ``orthogonal``: Haar-distributed Z = sqrt(N) Q, Q from the Householder QR
  Z = Q R with the sign fix Q <- Q diag(sign R_ii) (Mezzadri 2007: without it Q
  is not Haar), so that W W^T = sigma_w2 I exactly up to rounding;
* ``rademacher``: sign(Z) (+1 at 0): +-1 with probability 1/2, kurtosis 1;
* ``uniform``: sqrt(3) erf(Z / sqrt 2) = sqrt(3) (2 Phi(Z) - 1), uniform on
  (-sqrt 3, sqrt 3), kurtosis 9/5;
* ``student_t(nu)``, nu > 2: Z sqrt((nu - 2) / V), V ~ chi2(nu) = 2 Gamma(nu/2, 1)
  independent of Z (Z / sqrt(V / nu) is Student's t with variance nu / (nu - 2)),
  kurtosis 3 + 6 / (nu - 4) for nu > 4 (infinite for nu <= 4).

The Gamma(a = nu/2 > 1) variates are Marsaglia & Tsang's (2000) rejection
sampler on further counter-based draws (``aux``, supplied by the engine; see
engines.weights): with d = a - 1/3, c = 1 / sqrt(9 d), x ~ N(0, 1) and
u ~ U(0, 1) of attempt k, v = (1 + c x)^3 is accepted when v > 0 and
log u < x^2 / 2 + d - d v + d log v, giving d v. An attempt is rejected with
probability at most 0.049 for a >= 1 (their Table 1: efficiency >= 0.951), so
after ``GAMMA_ATTEMPTS`` = 16 attempts an entry is still pending with
probability <= 0.049^16 < 1.2e-21; such an entry takes V = nu (the mean: its
weight is Z sqrt((nu - 2) / nu)). Even a width-131072 network of 10^4 layers
(1.7e14 entries) expects fewer than 2e-7 such entries.

For the theory (theory's spectrum, free probability), each law records ``s1``,
the first coefficient of the S-transform S(z) = 1 + s1 z + ... of Z Z^T / N
(Marchenko-Pastur: -1 for every i.i.d. law of unit variance; Haar orthogonal,
Z Z^T / N = I: 0), and ``free_law``, "marchenko_pastur" or "haar". Mean-field
theory (the mean of |g|^2, log chi1, q*) is the Gaussian one for every law here.

A law is one record in ``REGISTRY`` (``register``); ``parse`` reads a label
("student_t(5)"), ``label`` writes the canonical one.
"""

import math
from dataclasses import dataclass

FREE_LAWS = ("marchenko_pastur", "haar")
GAMMA_ATTEMPTS = 16  # Marsaglia-Tsang attempts per entry (see the module docstring)


@dataclass(frozen=True)
class Law:
    """One weight law: ``draw(Z, xp, param, aux) -> float64 matrix of unit entry variance``.

    ``aux(attempt, index) -> (x, log_u)``: further standard normals and log-uniforms
    for the flat entries ``index`` (only laws with ``needs_aux`` call it).
    """

    name: str
    draw: object
    s1: float  # first S-transform coefficient of Z Z^T / N
    free_law: str  # "marchenko_pastur" or "haar"
    elementwise: bool = True  # i.i.d. entries (False: orthogonal)
    param_name: str = None  # e.g. "nu"; None: no parameter
    check: object = None  # param -> None, or the text of what is wrong
    needs_aux: bool = False
    variance: float = 1.0  # E[Z_ij^2] after the draw: 1 for every law
    kurtosis: object = None  # param -> E[Z_ij^4] (None: not elementwise)
    doc: str = ""

    @property
    def takes_param(self):
        return self.param_name is not None


REGISTRY: dict = {}


def register(name, draw, s1, free_law, **kw):
    """Add a weight law (a record of ``REGISTRY``)."""
    if free_law not in FREE_LAWS:
        raise ValueError(f"free_law must be one of {FREE_LAWS}")
    law = Law(name, draw, s1, free_law, **kw)
    REGISTRY[name] = law
    return law


def names():
    """The registered law names, in registration order."""
    return tuple(REGISTRY)


def get(name):
    return REGISTRY[name]


def parse(text):
    """'orthogonal' -> (Law, None); 'student_t(5)' -> (Law, 5.0).

    Raises ValueError naming the allowed values.
    """
    text = str(text).strip()
    name, param = text, None
    if text.endswith(")") and "(" in text:
        name, _, rest = text[:-1].partition("(")
        name = name.strip()
        try:
            param = float(rest)
        except ValueError:
            raise ValueError(f"bad weight-law parameter in {text!r}") from None
        if not math.isfinite(param):
            raise ValueError(f"the weight-law parameter in {text!r} must be finite")
    law = REGISTRY.get(name)
    if law is None:
        allowed = ", ".join(
            f"{n}({r.param_name})" if r.takes_param else n for n, r in REGISTRY.items()
        )
        raise ValueError(f"unknown weight law {text!r}; allowed: {allowed}")
    if law.takes_param and param is None:
        raise ValueError(f"weight law {name!r} needs its parameter {law.param_name}: {name}(...)")
    if not law.takes_param and param is not None:
        raise ValueError(f"weight law {name!r} takes no parameter (in {text!r})")
    if law.check is not None:
        why = law.check(param)
        if why:
            raise ValueError(f"weight law {text!r}: {why}")
    return law, param


def label(law, param=None):
    """Canonical label: the name, with the parameter where the law has one."""
    return f"{law.name}({param:g})" if law.takes_param else law.name


def is_gaussian(labels):
    """Whether a tuple of law labels is the Gaussian law alone (the engines' fused path)."""
    return tuple(labels) == ("gaussian",)


def _is_cupy(x):
    return type(x).__module__.startswith("cupy")


def _gaussian(Z, xp, param, aux):
    """Z itself."""
    return Z


def _orthogonal(Z, xp, param, aux):
    """sqrt(N) Q diag(sign R_ii) of the Householder QR Z = Q R (Haar, Mezzadri 2007)."""
    q, r = xp.linalg.qr(Z)
    sign = xp.where(xp.diagonal(r) < 0, -1.0, 1.0)
    return q * (sign * math.sqrt(Z.shape[0]))[None, :]


def _rademacher(Z, xp, param, aux):
    """sign(Z), +1 at 0."""
    return xp.where(Z < 0, -1.0, 1.0)


def _uniform(Z, xp, param, aux):
    """sqrt(3) erf(Z / sqrt 2): uniform on (-sqrt 3, sqrt 3)."""
    if _is_cupy(Z):
        from cupyx.scipy.special import erf
    else:
        from scipy.special import erf
    return math.sqrt(3.0) * erf(Z * (1.0 / math.sqrt(2.0)))


def gamma_marsaglia_tsang(a, n, xp, aux):
    """n Gamma(a, 1) variates (a >= 1) by Marsaglia-Tsang on ``aux``'s draws.

    d = a - 1/3, c = 1/sqrt(9 d): v = (1 + c x)^3 accepted when v > 0 and
    log u < x^2/2 + d - d v + d log v; entries pending after GAMMA_ATTEMPTS take a.
    """
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = xp.full(n, a, dtype=xp.float64)
    pending = xp.arange(n, dtype=xp.int64)
    for attempt in range(GAMMA_ATTEMPTS):
        if int(pending.size) == 0:
            break
        x, log_u = aux(attempt, pending)
        v = (1.0 + c * x) ** 3
        positive = v > 0
        log_v = xp.log(xp.where(positive, v, 1.0))
        accept = positive & (log_u < 0.5 * x * x + d - d * v + d * log_v)
        out[pending[accept]] = d * v[accept]
        pending = pending[~accept]
    return out


def _student_t(Z, xp, nu, aux):
    """Z sqrt((nu - 2) / V), V = 2 Gamma(nu/2, 1) ~ chi2(nu): Student's t(nu) of unit variance."""
    V = 2.0 * gamma_marsaglia_tsang(nu / 2.0, Z.size, xp, aux)
    return Z * xp.sqrt((nu - 2.0) / V).reshape(Z.shape)


def _nu_check(nu):
    return None if nu > 2 else f"nu must be > 2 (finite variance), got {nu:g}"


register(
    "gaussian",
    _gaussian,
    s1=-1.0,
    free_law="marchenko_pastur",
    kurtosis=lambda p: 3.0,
    doc="i.i.d. N(0, 1) entries (the default)",
)
register(
    "orthogonal",
    _orthogonal,
    s1=0.0,
    free_law="haar",
    elementwise=False,
    doc="sqrt(N) times a Haar orthogonal matrix: W W^T = sigma_w2 I",
)
register(
    "uniform",
    _uniform,
    s1=-1.0,
    free_law="marchenko_pastur",
    kurtosis=lambda p: 9.0 / 5.0,
    doc="i.i.d. uniform on (-sqrt 3, sqrt 3)",
)
register(
    "rademacher",
    _rademacher,
    s1=-1.0,
    free_law="marchenko_pastur",
    kurtosis=lambda p: 1.0,
    doc="i.i.d. +-1",
)
register(
    "student_t",
    _student_t,
    s1=-1.0,
    free_law="marchenko_pastur",
    param_name="nu",
    check=_nu_check,
    needs_aux=True,
    kurtosis=lambda nu: 3.0 + 6.0 / (nu - 4.0) if nu > 4 else math.inf,
    doc="i.i.d. Student's t(nu), nu > 2, scaled to unit variance",
)
