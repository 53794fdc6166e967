"""Summary statistics of the stored Jacobian spectra: lambda = s^2 of J^l, per grid point.

From x_i = log s_i (``log_singular_value``; NaN past a smaller width's D and where
the point diverged), per sample and spectrum layer, over the n stored values:

    mean(lambda)       = e^m mean_i e^{2 x_i - m},            m = max_i 2 x_i,
    Var/mean^2         = mean_i(l_i^2) / mean_i(l_i)^2 - 1     with l_i = e^{2 x_i - m} in (0, 1]
                         (scale-free, so computed on l: never overflows; two-pass),
    s_max              = e^{max_i x_i};

then over the samples that have a spectrum (diverged ones are left out):

    lambda_mean = mean_s mean(lambda)_s,   s_max = mean_s s_max_s,
    lambda_var_norm = mean_s (Var/mean^2)_s,
    *_se        = std_s (ddof 1) / sqrt(S)   (NaN with fewer than 2 samples).

The means of e^{L_s} over samples are taken with the largest L_s factored out
(log-sum-exp), so only a result beyond the float64 range itself is lost: it is NaN
(never inf), and the variables' long_name says so.
"""

import contextlib
import warnings

import numpy as np

from .. import variables

NAMES = (
    "lambda_mean",
    "lambda_mean_se",
    "lambda_var_norm",
    "lambda_var_norm_se",
    "s_max",
    "s_max_se",
)


def per_sample(x):
    """(log mean lambda, Var(lambda)/mean(lambda)^2, log s_max) over the last axis of x = log s."""
    valid = ~np.isnan(x)
    n = valid.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        top = np.max(np.where(valid, x, -np.inf), axis=-1)
        m = 2.0 * top
        lam = np.where(valid, np.exp(2.0 * x - m[..., None]), 0.0)
        mean = lam.sum(axis=-1) / n
        var = np.where(valid, (lam - mean[..., None]) ** 2, 0.0).sum(axis=-1) / n
        log_mean = m + np.log(mean)
        var_norm = var / mean**2
    none = (n == 0) | ~np.isfinite(top)
    return tuple(np.where(none, np.nan, v) for v in (log_mean, var_norm, top))


def mean_exp(L, axis):
    """(mean_s e^{L_s}, its standard error) over ``axis``, NaN samples left out, computed
    with max_s L_s factored out; NaN where the value leaves the float64 range."""
    valid = ~np.isnan(L)
    S = valid.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        top = np.max(np.where(valid, L, -np.inf), axis=axis)
        y = np.where(valid, np.exp(L - np.expand_dims(top, axis)), np.nan)
        mean = np.nanmean(y, axis=axis)
        se = np.nanstd(y, axis=axis, ddof=1) / np.sqrt(S)
        scale = np.exp(top)
        out = mean * scale, np.where(S >= 2, se * scale, np.nan)
    return tuple(np.where(np.isfinite(v) & (S > 0), v, np.nan) for v in out)


def mean_se(v, axis):
    """(mean, standard error) over ``axis``, NaN samples left out."""
    valid = ~np.isnan(v)
    S = valid.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        mean = np.nanmean(v, axis=axis)
        se = np.nanstd(v, axis=axis, ddof=1) / np.sqrt(S)
    return mean, np.where(S >= 2, se, np.nan)


@contextlib.contextmanager
def _quiet():
    """No RuntimeWarning for all-NaN slices (a diverged point's NaN is the answer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def statistics(x):
    """{name: array} of NAMES from x = log s shaped (..., sample, spectrum_layer, sv)."""
    log_mean, var_norm, log_top = per_sample(x)  # (..., sample, spectrum_layer)
    axis = -2
    with _quiet():
        lam, lam_se = mean_exp(log_mean, axis)
        vn, vn_se = mean_se(var_norm, axis)
        smax, smax_se = mean_exp(log_top, axis)
    return dict(zip(NAMES, (lam, lam_se, vn, vn_se, smax, smax_se), strict=True))


def summarise(data, config):
    """The summary variables {name: (dims, values, long_name)} of a finished file, or {}
    where no spectrum was measured."""
    if "log_singular_value" not in data:
        return {}
    dims = ("width", *config.grid_dims, "spectrum_layer")
    return {
        name: (dims, values, variables.CATALOGUE[name].long_name)
        for name, values in statistics(np.asarray(data["log_singular_value"])).items()
    }
