"""The singular values of the input-output Jacobian J^l = dh^l/dh^0, any architecture, any engine.

What is measured: for trajectory 1 of every grid point and the unit's sample,

    MLP, residual:  J^l = dh^l/dx   (h^0 = x;  MLP: J^l = W^l D^{l-1} W^{l-1} ... D^1 W^1,
                    D^k = diag phi'(h^k)),
    RNNs:           J^t = du_t/du_0 of the whole state (LSTM: [h; c], so 2N values),

all D singular values s_1 >= ... >= s_D (D = config.state_dimension(width)) at the
layers of ``measure.spectrum``, stored as log s_i (``log_singular_value``).

How (the product-QR method behind Lyapunov spectra, Benettin et al. 1980): the
model's own ``tangent`` carries a block of D tangent columns per grid point,
T^0 = I_D, through the layers: a JVP with D columns per point, so the cost is
about D JVPs. The unit's grid is *expanded* so that each point owns D columns
(point-major: column p D + k is column k of point p's block; ``Expanded``), and
the model sees an ordinary unit of P D points whose state is trajectory 1's,
repeated. Every ``qr_every`` layers (and at each spectrum layer) the block is
re-orthonormalised by Householder QR, T = Q R (``xp.linalg.qr``: LAPACK on the CPU
engines, cuSOLVER on CUDA), and the upper-triangular R accumulated:

    J^l = T^l ... = Q_m R_m R_{m-1} ... R_1 = Q_m K,

with K kept graded, K = diag(e^b) U: b float64 log-scales (unbounded: 10^+-300 and
far beyond survive), U with rows of unit norm (K_ij ~ e^{b_i}: the rows of a
product of triangular factors are graded by their diagonal's growth). The update
K' = R K is formed without ever scaling by e^b:

    beta_i = max_k (b_k + log |R_ik|),   C_ik = R_ik e^{b_k - beta_i}  (|C_ik| <= |R_ik|/|R_ik|max),
    V = C U,   b'_i = beta_i + log |V_i|,   U'_i = V_i / |V_i|,

so that row i of K' is e^{b'_i} U'_i exactly as row i of R K. The singular values
of J^l are those of K (Q has orthonormal columns); at a spectrum layer they are
computed in logs with relative accuracy by the log-scaled one-sided Jacobi SVD of
``graded_svd`` (Numba kernel ``numba_graded_svd`` on the CPU engines).

Precision: the block (and the forward states, weights and tangents it uses) is
propagated in ``measure.spectrum.precision`` (float64 by default), regardless of
measure.precision; QR every 4 layers in float64 and every layer in float32. Between
two QRs the block's columns separate by up to e^{k max|log s-ratio per layer|}, so
rounding moves the small log s_i by up to ``rounding_bound``: 1e-12 where the
exponents spread little, about 1e-4 for the smallest where they spread by ~5 a layer
(qr_every = 1 then gives the last digits).

Zero singular values: a ReLU network's J^l has rank <= the number of active units
(about N/2); the missing directions come out at the rounding level of the QR
(log s ~ log s_max - 35 in float64), not as -inf.

Divergence follows the oracle's rule (``generic._diverged`` on the spectrum's own
forward pass) plus a non-finite block: such a point's spectrum is NaN from that
layer on, and its columns are zeroed so that nothing spreads to other points.
"""

import numpy as np

from .. import progress
from . import base, gemm, generic

# Per-unit constants of a model that do not depend on the grid point (tied RNN
# matrices, bias noise, input drives): the expanded unit shares the unit's.
SHARED_TIED = ("W", "U", "xi", "drives")


class Expanded(generic.Unit):
    """The unit seen with D columns per grid point (point-major): the model's tangent on
    it carries a D-column block per point. Shares the unit's arrays and point-free
    constants; its per-point parameters are the unit's repeated D times."""

    def __init__(self, unit, D):  # noqa: D107  (no super().__init__: a view of ``unit``)
        self.__dict__.update(unit.__dict__)
        self.base, self.D = unit, D
        self.P = unit.P * D
        g = unit.grid
        self.grid = base.Grid(
            np.repeat(g.sigma_w2, D),
            np.repeat(g.sigma_b2, D),
            tuple((act, p, slice(c.start * D, c.stop * D)) for act, p, c in g.groups),
            {k: np.repeat(v, D) for k, v in (g.extra or {}).items()},
        )
        self.homogeneous = np.repeat(unit.homogeneous, D)
        self._tied = {}
        self.step_gates = None
        self.step_store = None

    def tied(self, key, make):
        if key in SHARED_TIED:
            return self.base.tied(key, make)
        return super().tied(key, make)

    def expand(self, x):
        """Trajectory 1's columns (last axis, first P) of a unit array, each repeated D times."""
        return np.repeat(x[..., : self.base.P], self.D, axis=-1)


def expanded_state(ex, state):
    """Trajectory 1 of a state of the unit, as a state of the expanded unit."""
    return {k: ex.expand(v) for k, v in state.items()}


def share_step_gates(unit, ex, layer, prev, prev_ex):
    """Hand the gate values the unit's step just computed from ``prev`` to the expanded
    unit (``models.gates.remember``/``recall``), so its tangent needs no second GEMM."""
    kept = unit.step_gates
    if kept is not None and kept[0] == layer and kept[1] is prev:
        ex.step_gates = (layer, prev_ex, {k: ex.expand(v) for k, v in kept[2].items()})


def identity_block(xp, D, P, dtype):
    """T^0: the identity I_D for each of the P points, (D, P D) point-major."""
    return xp.tile(xp.eye(D, dtype=dtype), (1, P))


def blocks(T, P, D):
    """(rows, P D) point-major -> (P, rows, D)."""
    return np.moveaxis(T.reshape(T.shape[0], P, D), 1, 0)


def unblocks(B):
    """(P, rows, D) -> (rows, P D) point-major."""
    P, rows, D = B.shape
    return np.moveaxis(B, 0, 1).reshape(rows, P * D)  # reshape copies (NumPy and CuPy alike)


def accumulate(b, U, R):
    """K' = R K for K = diag(e^b) U, returned as (b', U') (module docstring); stacks
    over the leading axis: b (P, D), U and R (P, D, D), float64.

        beta_i = max_k (b_k + log|R_ik|),  C_ik = R_ik e^{b_k - beta_i},
        V = C U,  b'_i = beta_i + log|V_i|,  U'_i = V_i / |V_i|.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        expo = b[:, None, :] + np.log(np.abs(R))
        beta = np.max(expo, axis=2)
        finite = np.isfinite(beta)
        C = np.where(np.isfinite(expo), R * np.exp(expo - beta[:, :, None]) / np.abs(R), 0.0)
        C = np.where(finite[:, :, None], C, 0.0)
        V = C @ U
        norm = np.sqrt(np.einsum("pij,pij->pi", V, V))
        b_new = np.where(finite & (norm > 0), beta + np.log(norm), -np.inf)
        U_new = V / np.where(norm > 0, norm, 1.0)[:, :, None]
    return b_new, U_new


def rounding_bound(log_s, layers, qr_every, precision="float64", c=10.0):
    """How far rounding may move each log s_i of the product QR (absolute): the tolerance
    between two engines, or two QR libraries, computing the same spectrum.

    Between two QRs (every ``qr_every`` = k layers and at each spectrum layer) the
    block's columns are carried unorthonormalised, and direction i is outgrown by
    direction 1 by about e^{g_i k / l}, with g_i = log s_1 - log s_i at layer l spread
    evenly over its l layers; its column then keeps a relative rounding error of
    about D eps e^{g_i k / l}, and the m QR rounds up to layer l add up:

        |delta log s_i| <= c m D eps e^{min(g_i min(k, l) / l, 40)} + 1e-12.

    ``log_s``: (..., S, D) at ``layers`` (S of them). c = 10: QR every layer against
    every 4 layers, tanh MLPs and Elman RNNs in both phases, differ by up to 0.8 times
    the bound with c = 1 (tests/test_spectrum.py).
    """
    marks = {int(layer) for layer in layers}  # a QR at each spectrum layer too
    m = np.array([[sum(j % qr_every == 0 or j in marks for j in range(1, int(layer) + 1))]
                  for layer in layers])  # fmt: skip
    at = np.asarray(layers, dtype=float).reshape(-1, 1)  # layers along the second-last axis
    gap = log_s[..., :1] - log_s
    spread = np.minimum(gap * np.minimum(qr_every, at) / at, 40.0)
    return c * m * log_s.shape[-1] * np.finfo(precision).eps * np.exp(spread) + 1e-12


def spectrum_config(config):
    """The config the spectrum runs with: the block's precision for every array."""
    import dataclasses

    return dataclasses.replace(config, precision=config.spectrum_precision)


def numpy_svd(b, U):
    from .graded_svd import log_singular_values

    return log_singular_values(b, U)


def run(config, width, sample, arrays=None, svd=None):
    """log s of J^l at every spectrum layer for every grid point: (grid..., S, D_max),
    NaN-padded past this width's D (base.spectrum_shape).

    ``arrays``: where the unit lives (``generic.HostArrays()`` by default); ``svd``:
    (b, U) -> log s, on host arrays (``graded_svd.log_singular_values`` by default).
    """
    svd = svd or numpy_svd
    cfg = spectrum_config(config)
    unit = generic.Unit(cfg, width, sample, arrays)
    xp, P = unit.xp, unit.P
    model = generic.model_of(cfg)
    D = cfg.state_dimension(width)
    ex = Expanded(unit, D)
    layers = [int(x) for x in cfg.spectrum_layers]
    where = {layer: s for s, layer in enumerate(layers)}
    out = np.full((P, len(layers), base.spectrum_shape(cfg)[-1]), np.nan)
    state = model.start(unit)
    T = identity_block(xp, D, P, unit.dtype)
    b = np.zeros((P, D))
    U = np.tile(np.eye(D), (P, 1, 1))
    dead = xp.zeros(P, dtype=bool)
    every = cfg.spectrum_qr_every
    progress.phase("spectrum")
    with unit.arrays.gemm_precision(False), gemm.one_blas_thread():  # reproducible bits
        for layer in range(1, layers[-1] + 1):
            W = model.weights(unit, layer)
            prev = state
            state = model.step(unit, layer, prev, W)
            prev_ex = expanded_state(ex, prev)
            share_step_gates(unit, ex, layer, prev, prev_ex)
            T = model.tangent(ex, layer, prev_ex, W, T)
            ex.step_gates = None
            bad_block = ~np.isfinite(blocks(T, P, D)).all(axis=(1, 2))
            dead |= generic._diverged(unit, model, state) | bad_block
            generic._kill(unit, model, state, dead)
            generic._zero(T, xp.repeat(dead, D))
            if layer % every == 0 or layer in where:
                Q, R = xp.linalg.qr(blocks(T, P, D))
                T = unblocks(Q)
                b, U = accumulate(b, U, np.asarray(unit.arrays.to_host(R), dtype=np.float64))
            if layer in where:
                host_dead = np.asarray(unit.arrays.to_host(dead))
                logs = svd(b, U)
                logs[host_dead] = np.nan
                out[:, where[layer], :D] = logs
            progress.step(layer, layers[-1])
    return base.shape_results(cfg, {"s": out})["s"]
