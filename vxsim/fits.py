"""Straight-line fits of log squared norms over layers, and where a rate crosses zero.

The primitives that theory (fitting mean-field curves as the data are fitted),
analysis (growth rates, bootstrap) and store (a file's summary) share; they
depend on NumPy alone. For one grid point and sample, y_l = log |g^l|^2 is
fitted by a line in l (``exponential`` growth law) or in log l (``power``) over
the layers after a transient, counted from where the signal enters (the input
for JVP tangents, the output for VJP gradients); the rate is the slope in the
direction the signal travels, so both modes estimate log chi1:

* quenched: the mean over samples of each sample's slope (E[log |g|^2]);
  standard error = std / sqrt(S);
* annealed: the slope of log mean_s exp(y_s) (log E[|g|^2], what mean-field
  theory predicts); standard error by the jackknife over samples.
"""

import contextlib
import warnings

import numpy as np


@contextlib.contextmanager
def quiet():
    """Silence NumPy's warnings for all-NaN slices and log(0): NaN/-inf are the answers there."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


DIRECTION = {"jvp": 1.0, "vjp": -1.0}  # the way the signal travels through the layers


def fit_abscissa(layers, law):
    """What log |g|^2 is fitted against: l (exponential law) or log l (power law)."""
    layers = np.asarray(layers, dtype=np.float64)
    return np.log(layers) if law == "power" else layers


def fit_window(layers, depth, transient, mode):
    """Boolean mask of the recorded layers used in the fit."""
    if mode == "jvp":
        mask = layers > transient
    else:
        mask = layers <= depth - transient
    if mask.sum() < 2:  # too shallow for the transient: use every recorded layer
        mask = np.ones_like(layers, dtype=bool)
    return mask


def slopes(layers, y):
    """Least-squares slope of y (..., R) against layers (R,); NaN where any y is NaN."""
    x = layers.astype(np.float64)
    xc = x - x.mean()
    denom = (xc * xc).sum()
    if layers.size < 2 or denom == 0:
        return np.full(y.shape[:-1], np.nan)
    return (y * xc).sum(axis=-1) / denom


def growth_rates(y, layers, depth, transient, mode, law="exponential"):
    """Rates from y of shape (..., S, R): dict of quenched/annealed rate and standard error.

    Samples with a NaN in the window (diverged) are left out of both estimates.
    """
    mask = fit_window(layers, depth, transient, mode)
    sign = DIRECTION[mode]
    lw, yw = fit_abscissa(layers[mask], law), y[..., mask]
    per_sample = sign * slopes(lw, yw)  # (..., S)
    valid = np.isfinite(per_sample)
    n = valid.sum(axis=-1)
    with quiet():  # all samples diverged: NaN is the right answer
        quenched = np.nanmean(per_sample, axis=-1)
        q_se = np.nanstd(per_sample, axis=-1, ddof=1) / np.sqrt(n)
    annealed, a_se = _annealed(yw, lw, valid, sign)
    return {
        "quenched": quenched,
        "quenched_se": np.where(n > 1, q_se, np.nan),
        "annealed": annealed,
        "annealed_se": a_se,
        "samples_used": n,
    }


def _annealed(yw, lw, valid, sign):
    """Annealed slope over the valid samples and its jackknife standard error.

    log mean_s exp(y_s) per layer, computed relative to the per-layer peak; the
    leave-one-out sums come from prefix and suffix sums over samples, which
    avoids the cancellation of (total - own term) when one sample dominates.
    """
    y = np.where(valid[..., None], yw, -np.inf)  # (..., S, R)
    n = valid.sum(axis=-1)  # (...)
    with quiet():
        peak = np.max(y, axis=-2, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0.0)
        e = np.exp(y - peak)  # 0 for invalid samples
        total = e.sum(axis=-2)
        full = sign * slopes(lw, np.log(total / n[..., None]) + peak[..., 0, :])
        before = _exclusive_cumsum(e)
        after = np.flip(_exclusive_cumsum(np.flip(e, axis=-2)), axis=-2)
        loo = np.log((before + after) / (n - 1)[..., None, None]) + peak
        jack = np.where(valid, sign * slopes(lw, loo), np.nan)  # (..., S)
        mean = np.nanmean(jack, axis=-1)
        se = np.sqrt((n - 1) / n * np.nansum((jack - mean[..., None]) ** 2, axis=-1))
    full = np.where(n > 0, full, np.nan)
    return full, np.where(n > 1, se, np.nan)


def _exclusive_cumsum(e):
    """sum_{t < s} e_t along the sample axis (-2), without subtracting anything."""
    out = np.zeros_like(e)
    np.cumsum(e[..., :-1, :], axis=-2, out=out[..., 1:, :])
    return out


def zero_crossing(sigma_w2, rate):
    """sigma_w2 where ``rate`` first goes from < 0 to >= 0, linear between grid points.

    With rate_i < 0 <= rate_{i+1} at s_i < s_{i+1}:
        s* = s_i - rate_i (s_{i+1} - s_i) / (rate_{i+1} - rate_i).
    ``rate`` may have leading dimensions (..., n_sigma_w2); NaN where no crossing.
    """
    s = np.asarray(sigma_w2, dtype=np.float64)
    order = np.argsort(s)
    s = s[order]
    r = np.asarray(rate, dtype=np.float64)[..., order]
    if s.size < 2:  # one sigma_w2: nothing to cross between
        x = np.full(r.shape[:-1], np.nan)
        return float(x) if x.ndim == 0 else x
    lo, hi = r[..., :-1], r[..., 1:]
    with quiet():
        cond = np.isfinite(lo) & np.isfinite(hi) & (lo < 0) & (hi >= 0)
    found = cond.any(axis=-1)
    i = np.argmax(cond, axis=-1)
    a = np.take_along_axis(lo, i[..., None], -1)[..., 0]
    b = np.take_along_axis(hi, i[..., None], -1)[..., 0]
    with quiet():
        x = s[i] - a * (s[i + 1] - s[i]) / (b - a)
    x = np.where(found, x, np.nan)
    return float(x) if x.ndim == 0 else x


# Where a zero crossing along sigma_w2 lies in the grid (``crossing_flag``).
CROSSING_FLAGS = {
    0: "inside the grid",
    1: "in the grid's first interval",
    2: "in the grid's last interval",
    3: "none: the rate is negative over the whole grid (the edge lies above it)",
    4: "none: the rate is non-negative over the whole grid (the edge lies below it)",
    5: "none: no sign change between finite rates",
}


def crossing_flag(sigma_w2, rate):
    """Where ``zero_crossing`` found its crossing (codes of ``CROSSING_FLAGS``), per leading index.

    A crossing in the first or last interval is interpolated but sits at the
    grid's edge; none at all says on which side the edge lies when every rate
    has one sign. Nothing is ever extrapolated.
    """
    s = np.asarray(sigma_w2, dtype=np.float64)
    r = np.asarray(rate, dtype=np.float64)[..., np.argsort(s)]
    n = s.size
    with quiet():
        finite = np.isfinite(r).all(axis=-1)
        negative = finite & (r < 0).all(axis=-1)
        positive = finite & (r >= 0).all(axis=-1)
    flag = np.full(r.shape[:-1], 5, dtype=np.int8)
    flag[negative] = 3
    flag[positive] = 4
    if n >= 2:
        lo, hi = r[..., :-1], r[..., 1:]
        with quiet():
            cond = np.isfinite(lo) & np.isfinite(hi) & (lo < 0) & (hi >= 0)
        found = cond.any(axis=-1)
        i = np.argmax(cond, axis=-1)
        where = np.where(i == 0, 1, np.where(i == n - 2, 2, 0)).astype(np.int8)
        flag = np.where(found, where, flag)
    return flag
