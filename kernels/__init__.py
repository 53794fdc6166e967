"""The CUDA C sources of vxsim's GPU engine (``*.cu``, ``*.cuh``; see README.md).

In the source tree this is the top-level ``kernels/`` folder; built wheels
install it as ``vxsim.kernels``. ``vxsim.engines.cuda_sources`` finds and
assembles the sources; there is no Python code here.
"""
