"""What every ``vxsim`` command shares: one-line errors with exit status 2, JSON output."""

import functools
import json
import sys

import click
import numpy as np

from .errors import VxsimError
from .interrupt import Stopped


def fail(message):
    click.echo(f"vxsim: error: {message}", err=True)
    sys.exit(2)


def guarded(fn):
    """Turn VxsimError (and unreadable files) into one line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VxsimError as err:
            fail(str(err))
        except Stopped as stop:
            click.echo(
                f"vxsim: stopped by {stop.name} at a safe point: every finished work unit "
                "is kept and the output is resumable (run the same command with --resume)",
                err=True,
            )
            sys.exit(128 + stop.signum)
        except KeyboardInterrupt:
            click.echo("vxsim: interrupted (finished work units are kept: --resume)", err=True)
            sys.exit(130)

    return wrapper


def emit(data, as_json, text):
    """Print ``data`` as JSON, or the human-readable ``text``."""
    click.echo(json.dumps(data, indent=2, default=_json_default) if as_json else text)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)
