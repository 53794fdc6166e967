"""Publication defaults: figure sizes, fonts, colour-blind-safe palettes, axis labels.

Palettes
* categorical (activations, files, sigma_w2 lines): Okabe & Ito (2008), the eight
  colours that stay distinct under the common colour-vision deficiencies; ordered
  so that the first ones also read well on white (yellow last).
* diverging (growth rates, centred on zero): ColorBrewer's RdBu reversed. Its two
  arms are blue and red, which protanopes and deuteranopes tell apart (blue-orange
  in their eyes), its lightness rises monotonically to white at the centre, so the
  edge of chaos (rate 0) shows as a white band that black overlays sit on, and the
  sign reads as hot (red, exploding, chaotic) against cold (blue, vanishing,
  ordered). Matplotlib's 'coolwarm' is as safe but has a grey centre that gives the
  critical band less contrast.

Sizes are in inches: a single journal column is 3.4 in wide, a double one 7.0 in.
"""

import contextlib

from ..errors import VxsimError

SINGLE = 3.4
DOUBLE = 7.0

OKABE_ITO = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DIVERGING = "RdBu_r"
MISSING = "0.75"  # grey for cells without a value (every sample diverged)

INSTALL_HINT = 'plotting needs matplotlib: pip install "vxsim[plot]"'

RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6.5,
    "figure.titlesize": 7,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 3,
    "ytick.major.size": 3,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,  # TrueType in PDF: text stays text, editable in Illustrator
    "ps.fonttype": 42,
    "svg.fonttype": "path",  # looks the same in every viewer, with or without the font
    "savefig.dpi": 300,
    "mathtext.fontset": "dejavusans",
}

# axis labels of the coordinates a figure may draw or name (variances are dimensionless)
SYMBOL = {
    "sigma_w2": r"$\sigma_w^2$",
    "sigma_b2": r"$\sigma_b^2$",
    "sigma_u2": r"$\sigma_u^2$",
    "alpha": r"$\alpha$",
    "forget_bias": r"$b_f$",
    "width": r"$N$",
    "layer": r"layer $l$",
}


def require_matplotlib():
    """matplotlib (the ``plot`` extra), or a one-line VxsimError saying how to install it."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise VxsimError(INSTALL_HINT) from None
    return matplotlib


@contextlib.contextmanager
def context():
    """rcParams of a publication figure for the ``with`` block (Agg backend, no GUI)."""
    mpl = require_matplotlib()
    with mpl.rc_context(RC):
        yield mpl


def new_figure(size):
    """A pyplot-free Figure (constrained layout) of ``size`` = (width, height) inches."""
    from matplotlib.figure import Figure

    return Figure(figsize=size, layout="constrained")


def diverging_cmap():
    import matplotlib

    return matplotlib.colormaps[DIVERGING].with_extremes(bad=MISSING)


def colour(i):
    return OKABE_ITO[i % len(OKABE_ITO)]


def marker(i):
    return MARKERS[i % len(MARKERS)]


def figure_size(size, default_height):
    """(width, height) inches from None, 'single', 'double', a width, or (width, height).

    Strings of the form "W" or "W,H" are accepted too (the CLI's --size). A width
    alone keeps the figure's default aspect (height scaled from the single column).
    """
    if size is None:
        return (SINGLE, default_height)
    if isinstance(size, str):
        text = size.strip().lower()
        if text in ("single", "double"):
            width = SINGLE if text == "single" else DOUBLE
            return (width, default_height * (1.0 if width == SINGLE else 1.6))
        try:
            size = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise VxsimError(
                f"--size {size!r}: use W,H in inches (e.g. 3.4,2.6), W, 'single' or 'double'"
            ) from None
    if isinstance(size, int | float):
        size = (float(size),)
    size = tuple(float(v) for v in size)
    if len(size) == 1:
        size = (size[0], default_height * size[0] / SINGLE)
    if len(size) != 2 or not all(0.5 <= v <= 50.0 for v in size):
        raise VxsimError(
            f"--size {size}: need W,H inches, each between 0.5 and 50 (e.g. 3.4,2.6 or 7,4)"
        )
    return size


def coord_text(name, value):
    """'sigma_b2=0.05' style text of one fixed coordinate, for titles and legends."""
    if name in SYMBOL:
        return f"{SYMBOL[name]} = {_fmt(value)}"
    return f"{name} {_fmt(value)}"


def _fmt(value):
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)
