"""Depth scales measured from data: how fast the correlation reaches its fixed point.

Mean-field theory says |c^l - c*| ~ exp(-l / xi_c). From the sample-mean
correlation cbar^l of one grid point, c_inf is estimated as the mean of cbar
over the deepest fifth of the recorded layers, and xi_c = -1 / slope of
log |cbar^l - c_inf| against l, fitted over the layers past the transient
where the distance still stands clear of the tail's noise (5 standard
deviations, and at least 1e-6).
"""

import numpy as np

from .growth import quiet

MIN_POINTS = 3


def correlation_depth_scale(corr, layers, transient):
    """xi_c per point from corr of shape (..., S, R); NaN where no clean decay is seen."""
    with quiet():
        cbar = np.nanmean(corr, axis=-2)  # (..., R)
    R = layers.size
    tail = max(MIN_POINTS, R // 5)
    flat = cbar.reshape(-1, R)
    out = np.full(flat.shape[0], np.nan)
    for i, c in enumerate(flat):
        if not np.all(np.isfinite(c)):
            continue
        c_inf = c[-tail:].mean()
        noise = max(5 * c[-tail:].std(), 1e-6)
        dist = np.abs(c - c_inf)
        usable = (dist > noise) & (layers <= layers[-tail])
        # the leading run of usable layers past the transient; beyond it the decay is in noise
        start = np.flatnonzero(layers > transient)
        ok = usable[start]
        keep = start[: ok.size if ok.all() else int(np.argmin(ok))]
        if keep.size < MIN_POINTS:
            continue
        slope = np.polyfit(layers[keep].astype(float), np.log(dist[keep]), 1)[0]
        if slope < 0:
            out[i] = -1.0 / slope
    return out.reshape(cbar.shape[:-1])
