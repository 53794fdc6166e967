"""The Jacobian spectrum's theory beside its measurement (free probability, theory.spectrum).

When the results file measured the spectrum (``config.spectrum_layers``: the layers l
of J^l = dh^l/dx; the summary holds lambda_mean, lambda_var_norm, lambda_var_norm_se,
s_max with dims (width, GRID, spectrum_layer)), the ``analysis`` group gets, with dims
(GRID, spectrum_layer), GRID = ``config.grid_dims`` (``init`` among them when
network.init is set):

* ``theory_lambda_mean`` = sigma_w2^l prod_{k=1}^{l-1} mu1(q^k),
* ``theory_log_lambda_mean``, its natural log (finite where the mean over/underflows),
* ``theory_lambda_var_norm`` = l (-s1) + sum_{k=1}^{l-1} (mu2(q^k)/mu1(q^k)^2 - 1),

mu_j(q) = E[phi'(sqrt(q) z)^(2j)], along the mean-field trajectory q^1 = sigma_w2 q0 +
sigma_b2 of the network's own input length q0, s1 the weight law's first S-transform
coefficient (-1 i.i.d. laws, 0 orthogonal). These hold for the plain MLP; other
architectures (residual, RNNs) get NaN: their Jacobians are not products of free
W D factors of this form (the residual's 1 + alpha W D, the RNN's tied W), so no
formula is claimed. NaN too for activations without MLP mean-field theory, and
beyond the layer where q^k diverges past theory.meanfield.Q_CAP.
"""

import numpy as np

from ..errors import VxsimError
from ..theory import spectrum


def _axis_values(config, name):
    if name == "activation":
        return list(config.activations)
    if name == "init":
        return list(getattr(config, "inits", ("gaussian",)))
    if name == "sigma_w2":
        return list(config.sigma_w2)
    if name == "sigma_b2":
        return list(config.sigma_b2)
    return list(config.extra_axes[name])


def spectrum_layers(config):
    """The measured spectrum layers, or None where the file has no spectrum."""
    layers = getattr(config, "spectrum_layers", None)
    if layers is None or len(layers) == 0:
        return None
    return np.asarray(layers, dtype=np.int64)


def theory_moments(config):
    """(log_lambda_mean, lambda_var_norm), each of shape grid_shape + (spectrum layers,)."""
    layers = spectrum_layers(config)
    dims = tuple(config.grid_dims)
    shape = tuple(config.grid_shape) + (layers.size,)
    log_mean = np.full(shape, np.nan)
    var_norm = np.full(shape, np.nan)
    if not config.arch.spectrum_theory:
        return log_mean, var_norm
    values = {name: _axis_values(config, name) for name in dims}
    laws = [spectrum._weight_law(label)[0] for label in values.get("init", ["gaussian"])]
    ia, iw, ib = dims.index("activation"), dims.index("sigma_w2"), dims.index("sigma_b2")
    ii = dims.index("init") if "init" in dims else None
    for a, label in enumerate(values["activation"]):
        for w, sw2 in enumerate(values["sigma_w2"]):
            for b, sb2 in enumerate(values["sigma_b2"]):
                try:
                    lm, sum_v = spectrum.layer_sums(label, sw2, sb2, layers, config.q0)
                except VxsimError:
                    break  # no mean-field theory for this activation (relu_power): NaN
                for i, s1 in enumerate(laws):
                    at = [slice(None)] * len(dims)
                    at[ia], at[iw], at[ib] = a, w, b
                    if ii is not None:
                        at[ii] = i
                    log_mean[tuple(at)] = lm  # broadcast over any extra axes
                    var_norm[tuple(at)] = layers * (-s1) + sum_v
    return log_mean, var_norm


def analyse(config):
    """{name: (dims, array, description)} of the spectrum's theory; {} without a spectrum."""
    if spectrum_layers(config) is None:
        return {}
    log_mean, var_norm = theory_moments(config)
    dims = tuple(config.grid_dims) + ("spectrum_layer",)
    with np.errstate(over="ignore"):
        mean = np.exp(log_mean)
    where = "free probability along the mean-field trajectory (MLP; NaN: no theory)"
    return {
        "theory_lambda_mean": (
            dims,
            mean,
            f"mean of lambda = s^2 of J^l: sigma_w2^l prod_(k<l) mu1(q^k); {where}",
        ),
        "theory_log_lambda_mean": (dims, log_mean, f"log of theory_lambda_mean; {where}"),
        "theory_lambda_var_norm": (
            dims,
            var_norm,
            "Var(lambda)/mean(lambda)^2 of J^l: l (-s1) + sum_(k<l) (mu2/mu1^2 - 1)(q^k); " + where,
        ),
    }
