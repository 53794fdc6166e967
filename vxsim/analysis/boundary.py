"""The empirical edge of chaos: where the growth rate crosses zero along sigma_w2.

Confidence intervals come from the bootstrap over Monte Carlo samples. Because
all grid points of a sample share its weights (common random numbers), a
replicate resamples whole samples, the same ones for every grid point, which
keeps the correlation between neighbouring points that makes the boundary
smooth.
"""

import numpy as np

from ..fits import (
    DIRECTION,
    fit_abscissa,
    fit_window,
    quiet,
    slopes,
    zero_crossing,  # noqa: F401  (analysis's name for it)
)

N_BOOT = 400
LEVEL = 0.95


def resample_counts(n_samples, n_boot=N_BOOT, seed=0):
    """(n_boot, S) multiplicities of each sample in each bootstrap replicate (deterministic)."""
    gen = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    picks = gen.integers(0, n_samples, size=(n_boot, n_samples))
    return np.stack([np.bincount(p, minlength=n_samples) for p in picks]).astype(np.float64)


def bootstrap_rates(y, layers, depth, transient, mode, counts, law="exponential"):
    """Bootstrap replicates of the quenched and annealed growth rates.

    y: (..., S, R) log squared norms; counts: (B, S) multiplicities.
    Returns (quenched, annealed), each (B, ...). Samples with a NaN in the fit
    window (diverged) carry zero weight.
    """
    mask = fit_window(layers, depth, transient, mode)
    lw, yw = fit_abscissa(layers[mask], law), y[..., mask]
    sign = DIRECTION[mode]
    per_sample = sign * slopes(lw, yw)  # (..., S)
    valid = np.isfinite(per_sample)
    w = counts[:, None, :] * valid.reshape(1, -1, valid.shape[-1])  # (B, M, S)
    flat = np.where(valid, per_sample, 0.0).reshape(-1, valid.shape[-1])  # (M, S)
    with quiet():
        quenched = (w * flat[None]).sum(-1) / w.sum(-1)
    lead = per_sample.shape[:-1]
    ywf = np.where(valid[..., None], yw, -np.inf).reshape(-1, *yw.shape[-2:])  # (M, S, R)
    peak = np.max(ywf, axis=1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    expy = np.exp(ywf - peak)  # (M, S, R), zero for invalid samples
    with quiet():
        mean = np.einsum("bms,msr->bmr", w, expy) / w.sum(-1)[..., None]
        curve = np.log(mean) + peak[:, 0][None]
    annealed = sign * slopes(lw, curve)
    return quenched.reshape(-1, *lead), annealed.reshape(-1, *lead)


def interval(replicates, level=LEVEL):
    """Percentile interval over the leading (replicate) axis, ignoring NaN replicates."""
    tail = 100 * (1 - level) / 2
    with quiet():
        return (
            np.nanpercentile(replicates, tail, axis=0),
            np.nanpercentile(replicates, 100 - tail, axis=0),
        )
