"""``vxsim theory``: mean-field predictions from the command line.

The main CLI mounts the group with ``main.add_command(theory)``. Every bad input
ends with one line ``vxsim: error: <message>`` on stderr and exit status 2. In JSON
output a non-finite number (xi = inf on the critical line, q* = inf where q^l
diverges at the critical point) is written as null, so the output stays strict JSON.
"""

import json
import math
import os
import tempfile

import click
import numpy as np

from vxsim.clitools import guarded
from vxsim.errors import VxsimError
from vxsim.theory import meanfield

_POINT_KEYS = ("q_star", "chi1", "c_star", "chi_c", "xi_q", "xi_c")


def _number(option, text, nonneg=True):
    if text is None:
        raise VxsimError(f"missing option {option}")
    try:
        value = float(text)
    except ValueError:
        raise VxsimError(f"{option}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise VxsimError(f"{option} must be finite, got {text!r}")
    if nonneg and value < 0.0:
        raise VxsimError(f"{option} must be >= 0, got {text!r}")
    return value


def _activation(text):
    if text is None:
        raise VxsimError("missing option --activation")
    return text


def _range(text):
    """'START:STOP:NUM' -> NUM evenly spaced values from START to STOP inclusive."""
    if text is None:
        raise VxsimError("missing option --sigma-b2")
    parts = text.split(":")
    if len(parts) != 3:
        raise VxsimError(f"--sigma-b2: expected START:STOP:NUM, got {text!r}")
    start = _number("--sigma-b2 START", parts[0])
    stop = _number("--sigma-b2 STOP", parts[1])
    try:
        num = int(parts[2])
    except ValueError:
        raise VxsimError(f"--sigma-b2: NUM must be a whole number, got {parts[2]!r}") from None
    if num < 1:
        raise VxsimError(f"--sigma-b2: NUM must be >= 1, got {num}")
    return np.linspace(start, stop, num)


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _json(data):
    clean = {k: _finite_or_none(v) if isinstance(v, float) else v for k, v in data.items()}
    return json.dumps(clean, indent=2)


def _phase(chi1):
    if chi1 < 1.0:
        return "ordered: gradients vanish"
    if chi1 > 1.0:
        return "chaotic: gradients explode"
    return "critical"


_ACT_HELP = "activation label, e.g. tanh, relu, leaky_relu(0.2), elu"
_Q0_HELP = "the input's length q^0 that the length map starts from (default 1)"


@click.group("theory")
def theory():
    """Mean-field (infinite-width) predictions for the plain MLP."""


@theory.command("point")
@click.option("--activation", "-a", metavar="LABEL", help=_ACT_HELP + " (required)")
@click.option("--sigma-w2", metavar="FLOAT", help="weight variance sigma_w^2 (required)")
@click.option("--sigma-b2", metavar="FLOAT", help="bias variance sigma_b^2 (required)")
@click.option("--q0", default="1", metavar="FLOAT", help=_Q0_HELP)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@guarded
def point_cmd(activation, sigma_w2, sigma_b2, q0, as_json):
    """q*, chi1, c*, chi_c and the depth scales xi_q, xi_c at one (sigma_w2, sigma_b2)."""
    label = _activation(activation)
    sw2 = _number("--sigma-w2", sigma_w2)
    sb2 = _number("--sigma-b2", sigma_b2)
    res = meanfield.point(label, sw2, sb2, q0=_number("--q0", q0))
    if as_json:
        click.echo(_json(res))
        return
    lines = [f"{label} at sigma_w2={sw2:g}, sigma_b2={sb2:g}"]
    for key in _POINT_KEYS:
        note = f"   ({_phase(res[key])})" if key == "chi1" else ""
        lines.append(f"  {key:<7} {res[key]:.10g}{note}")
    click.echo("\n".join(lines))


@theory.command("critical")
@click.option("--activation", "-a", metavar="LABEL", help=_ACT_HELP + " (required)")
@click.option("--sigma-b2", metavar="FLOAT", help="bias variance sigma_b^2 (required)")
@click.option("--q0", default="1", metavar="FLOAT", help=_Q0_HELP)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@guarded
def critical_cmd(activation, sigma_b2, q0, as_json):
    """The critical sigma_w2 (chi1 = 1, the edge of chaos) at sigma_b2, and q* there."""
    res = meanfield.critical(
        _activation(activation), _number("--sigma-b2", sigma_b2), q0=_number("--q0", q0)
    )
    if as_json:
        click.echo(_json(res))
        return
    click.echo(
        f"{res['activation']} at sigma_b2={res['sigma_b2']:g}: "
        f"critical sigma_w2 = {res['sigma_w2']:.12g}, q_star = {res['q_star']:.10g}"
    )


@theory.command("line")
@click.option("--activation", "-a", metavar="LABEL", help=_ACT_HELP + " (required)")
@click.option(
    "--sigma-b2",
    metavar="START:STOP:NUM",
    help="NUM evenly spaced sigma_b2 from START to STOP (required)",
)
@click.option("-o", "--output", metavar="PATH", help="line.h5 (HDF5) or line.csv (CSV) (required)")
@click.option("--q0", default="1", metavar="FLOAT", help=_Q0_HELP)
@guarded
def line_cmd(activation, sigma_b2, output, q0):
    """The critical line sigma_w2(sigma_b2), with q* on it, written to OUTPUT.

    Columns sigma_b2, sigma_w2, q_star. HDF5: one dataset each (sigma_b2 the
    dimension scale) and the attribute ``activation``; CSV: a header line, then rows.
    """
    label = _activation(activation)
    values = _range(sigma_b2)
    if output is None:
        raise VxsimError("missing option -o/--output")
    suffix = os.path.splitext(output)[1].lower()
    if suffix not in (".h5", ".hdf5", ".csv"):
        raise VxsimError(f"-o {output}: unknown output type {suffix!r}; use .h5, .hdf5 or .csv")
    line = meanfield.critical_line(label, values, q0=_number("--q0", q0))
    try:
        _write_line(line, output, suffix)
    except OSError as err:
        raise VxsimError(f"cannot write {output}: {err.strerror or err}") from None
    click.echo(f"wrote {output} ({len(values)} points, {line['activation']})")


def _write_line(line, path, suffix):
    """Write to a temporary file beside ``path``, then rename: no half-written file is left."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".vxsim-line-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        if suffix == ".csv":
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write("sigma_b2,sigma_w2,q_star\n")
                for row in zip(line["sigma_b2"], line["sigma_w2"], line["q_star"], strict=True):
                    fh.write(",".join(repr(float(v)) for v in row) + "\n")
        else:
            import h5py

            with h5py.File(tmp, "w") as fh:
                fh.attrs["activation"] = line["activation"]
                for key in ("sigma_b2", "sigma_w2", "q_star"):
                    fh.create_dataset(key, data=np.asarray(line[key], dtype=np.float64))
                fh["sigma_b2"].make_scale("sigma_b2")
                for key in ("sigma_w2", "q_star"):
                    fh[key].dims[0].attach_scale(fh["sigma_b2"])
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


_INIT_HELP = "weight law: gaussian (default), orthogonal, uniform, rademacher, student_t(nu)"


def _layer(text):
    if text is None:
        raise VxsimError("missing option --layers")
    try:
        value = int(text)
    except ValueError:
        raise VxsimError(f"--layers must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise VxsimError(f"--layers must be a whole number >= 1, got {text!r}")
    return value


def _exp_text(log_value):
    """e^log_value as decimal text, also beyond the float range (1e-1000 stays 1e-1000)."""
    if log_value == -math.inf:
        return "0"
    if -700.0 < log_value < 700.0:
        return repr(math.exp(log_value))
    exponent = math.floor(log_value / math.log(10.0))
    mantissa = math.exp(log_value - exponent * math.log(10.0))
    return f"{mantissa:.15g}e{exponent:+d}"


def _write_density(dens, path):
    """CSV lambda, rho, log_lambda, rho_log_lambda (rho_log_lambda = lambda rho), atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise VxsimError(f"--out {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".vxsim-spectrum-", suffix=".csv", dir=folder)
    os.close(fd)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("lambda,rho,log_lambda,rho_log_lambda\n")
            for t, r in zip(dens.log_lambda, dens.rho_log, strict=True):
                log_rho = math.log(r) - t if r > 0.0 else -math.inf
                fh.write(f"{_exp_text(t)},{_exp_text(log_rho)},{float(t)!r},{float(r)!r}\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as err:
        raise VxsimError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@theory.command("spectrum")
@click.option("--activation", "-a", metavar="LABEL", help=_ACT_HELP + " (required)")
@click.option("--sigma-w2", metavar="FLOAT", help="weight variance sigma_w^2 (required)")
@click.option("--sigma-b2", metavar="FLOAT", help="bias variance sigma_b^2 (required)")
@click.option("--init", default="gaussian", metavar="LAW", help=_INIT_HELP)
@click.option("--layers", metavar="L", help="the depth l of J^l = dh^l/dx (required)")
@click.option("--q0", default="1", metavar="FLOAT", help=_Q0_HELP)
@click.option("--out", "-o", metavar="PATH", help="write the density of lambda here (CSV)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@guarded
def spectrum_cmd(activation, sigma_w2, sigma_b2, init, layers, q0, out, as_json):
    """Free-probability spectrum of J J^T at depth L: moments of lambda = s^2, and its density.

    lambda_mean and lambda_var_norm follow the mean-field trajectory from q^1 =
    sigma_w2 q0 + sigma_b2; the density (--out: CSV lambda, rho, log_lambda,
    rho_log_lambda) has every layer at the fixed point q*, so its moments are the
    fixed-point ones (density_lambda_mean, density_lambda_var_norm).
    """
    from vxsim.theory import spectrum

    label = _activation(activation)
    sw2, sb2 = _number("--sigma-w2", sigma_w2), _number("--sigma-b2", sigma_b2)
    depth = _layer(layers)
    q0v = _number("--q0", q0)
    mom = spectrum.moments(label, sw2, sb2, init, [depth], q0=q0v)
    res = {
        "activation": label,
        "init": str(init),
        "sigma_w2": sw2,
        "sigma_b2": sb2,
        "layers": depth,
        "q_star": mom.q_star,
        "chi1": mom.chi1,
        "mu1": mom.mu1,
        "mu2": mom.mu2,
        "s1": mom.s1,
        "log_lambda_mean": float(mom.log_lambda_mean[0]),
        "lambda_mean": float(mom.lambda_mean[0]),
        "lambda_var_norm": float(mom.lambda_var_norm[0]),
    }
    if out is not None:
        dens = spectrum.density(label, sw2, sb2, init, depth, q0=q0v)
        _write_density(dens, out)
        res.update(
            density_log_lambda_mean=dens.log_lambda_mean,
            density_lambda_var_norm=dens.lambda_var_norm,
            atom_at_zero=dens.atom_at_zero,
            point_mass_lambda=dens.point_mass[0] if dens.point_mass else math.nan,
            point_mass=dens.point_mass[1] if dens.point_mass else 0.0,
            density_rows=int(dens.log_lambda.size),
            output=out,
        )
    if as_json:
        click.echo(_json(res))
        return
    lines = [f"{label}, {init} weights, at sigma_w2={sw2:g}, sigma_b2={sb2:g}, depth {depth}"]
    keys = ("q_star", "chi1", "mu1", "mu2", "s1", "lambda_mean", "lambda_var_norm")
    keys += ("log_lambda_mean",)
    for key in keys:
        lines.append(f"  {key:<16} {res[key]:.10g}")
    if out is not None:
        note = f", atom {dens.atom_at_zero:g} at lambda = 0" if dens.atom_at_zero else ""
        if dens.point_mass is not None:
            at, mass = dens.point_mass
            lines.append(f"  point mass {mass:g} at lambda = {at:.10g}{note}: no density rows")
        else:
            lines.append(f"  density at q*: {dens.log_lambda.size} rows{note}")
        lines.append(f"wrote {out}")
    click.echo("\n".join(lines))
