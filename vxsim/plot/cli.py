"""``vxsim plot``: figures of results files (mounted with ``main.add_command(plot)``).

Every bad input (no matplotlib, an unfinished file, a bad --sel) ends with one line
``vxsim: error: ...`` and exit status 2; no figure file is left half-written.
"""

import click

from ..clitools import guarded
from ..errors import VxsimError

_SEL_HELP = (
    "NAME=VALUE[,NAME=VALUE...] for the dimensions not drawn (mode, width, activation, "
    "sigma_b2, extra grid axes); the first value otherwise, said in the title (repeatable)"
)
_SIZE_HELP = "W,H in inches, W alone, 'single' (3.4 in wide, the default) or 'double' (7 in)"


def _common(fn):
    fn = click.option("--dpi", default="300", show_default=True, help="PNG resolution")(fn)
    fn = click.option("--size", default=None, metavar="W,H", help=_SIZE_HELP)(fn)
    fn = click.option("--sel", "sel", multiple=True, metavar="NAME=VALUE", help=_SEL_HELP)(fn)
    fn = click.option(
        "-o", "--output", metavar="PATH", help="figure file: .png, .pdf or .svg (required)"
    )(fn)
    return fn


def _start(output, dpi, size):
    """Checks every plot command makes before reading anything; returns the dpi."""
    from . import output as out
    from . import style

    style.require_matplotlib()
    if output is None:
        raise VxsimError("missing option -o/--output (a .png, .pdf or .svg file)")
    out.check_path(output)
    style.figure_size(size, 1.0)
    try:
        return out.check_dpi(float(dpi))
    except ValueError:
        raise VxsimError(f"--dpi {dpi}: not a number") from None


def _finish(fig, output, dpi):
    from . import output as out

    out.save(fig, output, dpi)
    w, h = fig.get_size_inches()
    click.echo(f"wrote {output} ({w:g} x {h:g} in)")


@click.group("plot")
def plot():
    """Figures for papers: phase diagram, depth profile, edges of chaos (needs matplotlib)."""


@plot.command("phase")
@click.argument("path", type=click.Path(dir_okay=False))
@_common
@click.option(
    "--estimator", default="annealed", show_default=True, help="annealed | quenched growth rate"
)
@guarded
def phase_cmd(path, output, sel, size, dpi, estimator):
    """Growth rate over (sigma_w2, sigma_b2) per activation, with the edge of chaos."""
    dpi = _start(output, dpi, size)
    from .phase_map import phase

    _finish(phase(path, sel=sel, estimator=estimator, size=size), output, dpi)


@plot.command("depth")
@click.argument("path", type=click.Path(dir_okay=False))
@_common
@click.option(
    "--sigma-w2",
    "sigma_w2",
    default=None,
    metavar="V1,V2,...",
    help="the sigma_w2 to draw (default: up to 5 spread over the grid)",
)
@guarded
def depth_cmd(path, output, sel, size, dpi, sigma_w2):
    """ln|g^l|^2 against layer for several sigma_w2, with the theory's slope log chi1."""
    dpi = _start(output, dpi, size)
    from .depth_profile import depth

    _finish(depth(path, sel=sel, sigma_w2=sigma_w2, size=size), output, dpi)


@plot.command("boundary")
@click.argument("paths", nargs=-1, type=click.Path(dir_okay=False))
@_common
@click.option(
    "--activation",
    "-a",
    "activations",
    multiple=True,
    metavar="NAME[,NAME...]",
    help="also draw the theory's critical line of these activations (plain MLP)",
)
@click.option(
    "--sigma-b2",
    "sigma_b2",
    default=None,
    metavar="START:STOP:NUM",
    help="sigma_b2 range of the theory lines (default: the files' range, else 0:0.3:41)",
)
@click.option(
    "--estimator", default="annealed", show_default=True, help="annealed | quenched boundary"
)
@guarded
def boundary_cmd(paths, output, sel, size, dpi, activations, sigma_b2, estimator):
    """Critical lines of several activations/architectures (files and/or theory) on one axes."""
    dpi = _start(output, dpi, size)
    from .boundary_lines import boundary

    fig = boundary(
        list(paths),
        activations=list(activations),
        sel=sel,
        estimator=estimator,
        sigma_b2=sigma_b2,
        size=size,
    )
    _finish(fig, output, dpi)


@plot.command("spectrum")
@click.argument("path", type=click.Path(dir_okay=False))
@_common
@click.option(
    "--layers",
    "layers",
    default=None,
    metavar="L1,L2,...",
    help="the spectrum layers to draw (default: up to 4 spread over them)",
)
@guarded
def spectrum_cmd(path, output, sel, size, dpi, layers):
    """Density of log10 lambda (lambda = s^2 of J^l) at several depths, with free probability."""
    dpi = _start(output, dpi, size)
    from .spectrum import spectrum

    _finish(spectrum(path, sel=sel, layers=layers, size=size), output, dpi)
