"""Write a fixed set of sweeps to a folder, or compare two such folders bit for bit.

A refactoring that promises unchanged behaviour is checked by running this
before and after it (same machine) and comparing:

    python scripts/bitcheck.py write before/     # on the old commit
    python scripts/bitcheck.py write after/      # on the new one
    python scripts/bitcheck.py compare before/ after/

The sweeps cover every architecture, jvp, vjp and both, float32 and float64,
the numpy and numba engines and both MLP paths. Every dataset (the analysis
group's too) must be equal bit for bit (NaN where NaN); attributes other than
``created`` must be equal.
"""

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

COMMON = ["monte_carlo.samples=2", "network.depth=30", "grid.sigma_b2=[0.0, 0.05]"]
SWEEPS = {
    "mlp_both_f32_numba": (
        "numba",
        ["network.width=[32, 300]", 'measure.mode="both"', "grid.sigma_w2=[0.8, 1.5, 2.5]"],
    ),
    "mlp_vjp_f64_numpy": (
        "numpy",
        ["network.width=[48]", 'measure.mode="vjp"', 'measure.precision="float64"'],
    ),
    "mlp_fused_jvp_f64_numba": (
        "numba",
        [
            "network.width=[40]",
            'measure.mode="jvp"',
            'measure.precision="float64"',
            'engine.path="fused"',
            'network.activation=["erf", "leaky_relu(0.2)"]',
        ],
    ),
    "residual_both_f32_numba": (
        "numba",
        [
            'network.architecture="residual"',
            "network.width=[64]",
            'measure.mode="both"',
            "grid.alpha=[1.0, 0.2]",
            "grid.sigma_w2=[0.5, 1.5]",
        ],
    ),
    "rnn_jvp_f64_numba": (
        "numba",
        [
            'network.architecture="rnn"',
            "network.width=[64]",
            'measure.mode="jvp"',
            'measure.precision="float64"',
            "grid.sigma_w2=[0.5, 1.5, 3.0]",
        ],
    ),
    "rnn_both_f32_numpy": (
        "numpy",
        [
            'network.architecture="rnn"',
            "network.width=[32]",
            'measure.mode="both"',
            "grid.sigma_w2=[0.5, 1.5, 3.0]",
        ],
    ),
    "gru_vjp_f32_numpy": (
        "numpy",
        [
            'network.architecture="gru"',
            "network.width=[48]",
            'measure.mode="vjp"',
            "grid.sigma_w2=[0.5, 2.0]",
            "grid.update_bias=[0.0, 1.0]",
        ],
    ),
    "lstm_both_f64_numba": (
        "numba",
        [
            'network.architecture="lstm"',
            "network.width=[64]",
            'measure.mode="both"',
            'measure.precision="float64"',
            "grid.sigma_w2=[0.5, 2.0]",
            "grid.forget_bias=[0.0, 1.0]",
        ],
    ),
}


def write(folder):
    import vxsim

    folder.mkdir(parents=True, exist_ok=True)
    for name, (backend, keys) in SWEEPS.items():
        cfg = vxsim.load_config(overrides=COMMON + keys)
        vxsim.run_sweep(cfg, str(folder / f"{name}.h5"), backend=backend, overwrite=True)
        print("wrote", name)


def _items(path):
    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[...]
            for key, value in obj.attrs.items():
                if key not in ("created", "DIMENSION_LIST", "REFERENCE_LIST"):
                    out[f"{name}@{key}"] = value

        for key, value in f.attrs.items():
            if key != "created":
                out[f"@{key}"] = value
        f.visititems(visit)
    return out


def compare(a, b):
    bad = 0
    for name in SWEEPS:
        x, y = _items(a / f"{name}.h5"), _items(b / f"{name}.h5")
        problems = sorted(set(x) ^ set(y))
        for key in sorted(set(x) & set(y)):
            u, v = np.asarray(x[key]), np.asarray(y[key])
            same = u.shape == v.shape and u.dtype == v.dtype
            if same and u.dtype.kind == "f":
                same = np.array_equal(u, v, equal_nan=True)
            elif same:
                same = np.array_equal(u, v)
            if not same:
                problems.append(key)
        print(f"{name}: {len(x)} items, " + ("identical" if not problems else f"DIFFER {problems}"))
        bad += bool(problems)
    return bad


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("write").add_argument("folder", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.cmd == "write":
        write(args.folder)
        return 0
    return 1 if compare(args.a, args.b) else 0


if __name__ == "__main__":
    sys.exit(main())
