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
