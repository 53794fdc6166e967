"""Writing a figure: the format follows the file's suffix; never a half-written file."""

import os
import tempfile

from ..errors import VxsimError
from . import style

FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def check_path(path):
    """The format of ``path`` from its suffix; refuse unknown suffixes and missing folders."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in FORMATS:
        raise VxsimError(
            f"-o {path}: unknown figure type {suffix or '(none)'!r}; use " + ", ".join(FORMATS)
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise VxsimError(f"-o {path}: folder {folder} does not exist")
    return FORMATS[suffix]


def check_dpi(dpi):
    if not 10 <= float(dpi) <= 2400:
        raise VxsimError(f"--dpi {dpi:g}: must be between 10 and 2400")
    return float(dpi)


def save(fig, path, dpi=300):
    """Write ``fig`` to ``path`` (.png at ``dpi``, or vector .pdf/.svg), atomically.

    The figure keeps its size exactly (no tight bounding box): a 3.4 x 2.6 in figure
    at 300 dpi is a 1020 x 780 pixel PNG.
    """
    fmt = check_path(path)
    dpi = check_dpi(dpi)
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(
        prefix=".vxsim-plot-", suffix="." + fmt, dir=os.path.dirname(os.path.abspath(path))
    )
    os.close(fd)
    try:
        with style.context():
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=_metadata(fmt))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a figure is not
        os.replace(tmp, path)
    except OSError as err:
        raise VxsimError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _metadata(fmt):
    from .. import __version__

    return {"Software" if fmt == "png" else "Creator": f"vxsim {__version__}"}
