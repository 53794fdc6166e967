"""Time of a work unit with the Jacobian spectrum against the same unit's JVP alone.

    python scripts/bench_spectrum.py [--widths 32 64 128 256] [--depth 64] [--backend numba]

Per width: one MLP unit (tanh, one grid point, sigma_w2 = 1, depth L) measured side by
side in the same process: the JVP unit (``module.run_unit``), then the spectrum pass
alone (``engines.spectrum.run``, float64 block, QR every 4 layers, spectrum at layer L),
both after one warm-up call (Numba compiled), best of ``--repeat``. The ratio is the
spectrum's cost in JVPs; the method's is about D = N JVPs (a D-column tangent block per
point, the QR and K update D^3 per point every 4 layers, the graded SVD D^3 per
spectrum layer). Prints one line per width, and the machine's load.
"""

import argparse
import os
import time

import numpy as np
from bench_cpu import best  # the best of ``repeat`` wall times (scripts/ is on the path)

from vxsim import config as config_mod
from vxsim import engines
from vxsim.engines import spectrum


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--depth", type=int, default=64)
    ap.add_argument("--points", type=int, default=1, help="grid points (sigma_w2 values)")
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    module = engines.get(args.backend)
    sw2 = np.linspace(0.9, 1.1, args.points).tolist()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  load {os.getloadavg()}  backend {module.NAME}")
    print("# width  jvp_s  spectrum_s  ratio  ratio/N")
    for width in args.widths:
        cfg = config_mod.load(
            overrides=[
                f"network.width=[{width}]",
                f"network.depth={args.depth}",
                'network.activation=["tanh"]',
                f"grid.sigma_w2={sw2}",
                "grid.sigma_b2=[0.0]",
                f"measure.spectrum={{layers=[{args.depth}]}}",
            ]
        )
        arrays = module.spectrum_arrays(cfg)

        def jvp(cfg=cfg, width=width):
            return module.run_unit(cfg, width, 0)

        def spec(cfg=cfg, width=width, arrays=arrays):
            return spectrum.run(cfg, width, 0, arrays, module.graded_svd)

        jvp(), spec()  # warm-up: compile, caches
        t_jvp, t_spec = best(jvp, args.repeat), best(spec, args.repeat)
        ratio = t_spec / t_jvp
        print(f"{width:7d}  {t_jvp:.4f}  {t_spec:.3f}  {ratio:7.1f}  {ratio / width:.2f}")


if __name__ == "__main__":
    main()
