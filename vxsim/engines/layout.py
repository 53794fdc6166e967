"""Row numbers of the per-point tables that the Numba and CUDA kernels share.

A work unit's per-point state lives in two small tables, ``pf`` (N_F, P)
float64 and ``pi`` (N_I, P) integers, and its records in ``res`` (4, P, R)
float64. Both engines lay them out the same way; the CUDA program gets these
numbers as ``#define VX_<NAME>`` lines (``cuda_sources``), the Numba kernels
as module constants (``numba_epilogue``). A layout change is made here, once.
"""

# Rows of the per-point float64 table ``pf``.
F_SCALE = 0  # sqrt(sigma_w2 / N), as rounded to the run's dtype
F_BAMP = 1  # sqrt(sigma_b2)
F_PARAM = 2  # activation parameter, as rounded to the run's dtype
F_LS1 = 3  # log-scale of h1 (homogeneous activations), forward pass
F_LS2 = 4  # log-scale of h2
F_ACC = 5  # accumulated log |t|^2 (JVP)
F_LSR = 6  # log-scale of h1 while a VJP segment is recomputed
F_GACC = 7  # accumulated log |g|^2 (VJP)
N_F = 8
# Rows of the per-point integer table ``pi`` (int64 on Numba, int32 on CUDA).
I_CODE = 0  # activation code (position in the engine's activation list)
I_HOMOG = 1  # 1 if the activation is positively homogeneous
I_DEAD = 2  # 1 once the forward pass declared the point diverged
I_DIVERGED = 3  # layer at which it diverged (0: never), as the oracle reports it
I_COLLAPSED = 4  # 1 once its backpropagated gradient collapsed (VJP)
N_I = 5
# Planes of the result array ``res`` (4, P, R).
R_LOGQ = 0
R_CORR = 1
R_TAN = 2
R_GRAD = 3
# What a forward epilogue writes for the next GEMM (both engines); the Numba
# kernels have further kinds of their own.
KIND_FWD = 0  # phi(h1), phi(h2)
KIND_JVP = 1  # phi(h1), phi(h2), phi'(h1) * t
# exp(-ls) rescales the bias of a renormalised state (h = e^ls hh); -ls is capped here so
# that exp cannot overflow (models/mlp.preactivation; the CUDA header's VX_EXP_CAP).
EXP_CAP = 700.0
