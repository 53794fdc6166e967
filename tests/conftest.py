"""Shared helpers for the test suite: small configs, the CLI, a brute-force reference network."""

import os
import subprocess
import sys

import numpy as np
import pytest

from vxsim import config as config_mod
from vxsim.engines import base


def small_config(**keys):
    """A Config from the default with --set style overrides given as keyword pairs.

    small_config(network__depth=20) sets network.depth = 20.
    """
    items = []
    for key, value in keys.items():
        items.append(f"{key.replace('__', '.')}={_toml(value)}")
    return config_mod.load(overrides=items)


def _toml(value):
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def materialised_layers(config, width, sample, sigma_w2, sigma_b2):
    """W^l = sqrt(sigma_w2/N) Z^l and b^l = sqrt(sigma_b2) xi^l for l = 1..L, float64."""
    L = config.depth
    Ws = [
        np.sqrt(sigma_w2 / width) * base.weights(config, width, sample, l, np.float64)
        for l in range(1, L + 1)
    ]
    bs = [np.sqrt(sigma_b2) * base.bias(config, width, sample, l) for l in range(1, L + 1)]
    return Ws, bs


def reference_network(config, width, sample, act, param, sigma_w2, sigma_b2):
    """One network at a time with materialised W^l and b^l, float64, no renormalisation.

    Returns per layer l = 1..L: log q^l, c^l, log |J v0|^2/|v0|^2 and
    log |dE/dh^l|^2/|dE/dh^L|^2 from the explicit backward recursion.
    """
    L = config.depth
    x1, x2, v0 = base.inputs(config, width, sample)
    Ws, bs = materialised_layers(config, width, sample, sigma_w2, sigma_b2)
    h1s, h2s = [], []
    a1, a2, t = x1, x2, v0
    log_t = []
    for l in range(L):
        h1 = Ws[l] @ a1 + bs[l]
        h2 = Ws[l] @ a2 + bs[l]
        t = Ws[l] @ t
        h1s.append(h1)
        h2s.append(h2)
        log_t.append(np.log(t @ t) - np.log(v0 @ v0))
        a1, a2 = act.phi(h1, param), act.phi(h2, param)
        t = act.dphi(h1, param) * t
    log_q = np.array([np.log(np.mean(h * h)) for h in h1s])
    corr = np.array([(a @ b) / np.sqrt((a @ a) * (b @ b)) for a, b in zip(h1s, h2s, strict=True)])
    g = base.output_direction(config, width, sample)
    log_g = np.zeros(L)
    g0 = np.log(g @ g)
    for l in range(L - 1, 0, -1):  # g^{l} (0-based index l-1) from g^{l+1}
        g = act.dphi(h1s[l - 1], param) * (Ws[l].T @ g)
        log_g[l - 1] = np.log(g @ g) - g0
    return {
        "log_q": log_q,
        "corr": corr,
        "log_tangent_norm": np.array(log_t),
        "log_grad_norm": log_g,
    }


@pytest.fixture
def tmp_out(tmp_path):
    return str(tmp_path / "out.h5")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Six units of about half a second each on the numpy engine (2-core CPU): a sweep
# slow enough to be killed or read while it runs.
@pytest.fixture(scope="session")
def slow_reference(tmp_path_factory):
    """The SLOW_KEYS sweep run once, uninterrupted, in a process of its own."""
    path = str(tmp_path_factory.mktemp("ref") / "ref.h5")
    p = spawn_cli("sweep", "-o", path, *SLOW_KEYS)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    return path


SLOW_KEYS = [
    "--set",
    "network.width=64",
    "--set",
    "network.depth=300",
    "--set",
    "monte_carlo.samples=6",
    "--set",
    "grid.sigma_w2=[0.8,1.5,3.0]",
    "--set",
    'measure.mode="both"',
    "--backend",
    "numpy",
    "-q",
]


def run_cli(*args, cwd=None):
    """``python -m vxsim ARGS`` in a subprocess with this source tree first on the path."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "vxsim", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def spawn_cli(*args, prelude="", extra_env=None, **kw):
    """``vxsim ARGS`` started in a new process (after the Python statements in ``prelude``);
    ``extra_env`` sets variables, or removes those it maps to None."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name, value in (extra_env or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    code = f"{prelude}\nfrom vxsim.cli import main\nmain(prog_name='vxsim')"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def units_done(path):
    """Work units flagged complete in a results file (also while it is written); 0 if none yet."""
    from vxsim.store.hdf5 import open_reader

    try:
        with open_reader(path) as f:
            return int(f["completed"][...].sum())
    except (OSError, KeyError):
        return 0
