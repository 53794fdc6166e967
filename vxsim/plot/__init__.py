"""Figures of a results file, for papers (needs matplotlib: ``pip install "vxsim[plot]"``).

>>> import vxsim, vxsim.plot
>>> fig = vxsim.plot.phase("out.h5")                      # or an xarray Dataset
>>> fig = vxsim.plot.depth("out.h5", sel="activation=tanh,sigma_b2=0.05")
>>> fig = vxsim.plot.boundary(["out.h5"], activations=["erf"])
>>> fig = vxsim.plot.spectrum("out.h5", sel="init=orthogonal", layers="16,64")
>>> vxsim.plot.save(fig, "phase.pdf")                      # .png, .pdf or .svg

Each function returns a matplotlib Figure (no pyplot state); matplotlib is imported
only when one is called.
"""

from .boundary_lines import boundary
from .depth_profile import depth
from .output import save
from .phase_map import phase
from .spectrum import spectrum

__all__ = ["boundary", "depth", "phase", "save", "spectrum"]
