"""The declared architecture: everything the rest of vxsim needs to know about a model.

Each model module (``vxsim/models/<name>.py``) holds the NumPy step functions
of one architecture and exports one ``ARCHITECTURE = Architecture(...)``;
``vxsim.models.registry`` collects them. Config (axes, recurrence), engines
(step functions, gates, fast paths), theory (the mean-field hook) and analysis
(the growth law) ask this record and never spell an architecture's name.
"""

from dataclasses import dataclass, field
from types import MappingProxyType

GROWTH_LAWS = ("exponential", "power")

# What engines.generic calls on ``steps`` (a module or any namespace):
STEP_FUNCTIONS = (
    "start",  # unit -> state of both trajectories at layer 0
    "step",  # (unit, layer, state, Z) -> state at layer
    "weights",  # (unit, layer) -> Z (or the stacked gate matrices)
    "tangent_start",  # unit -> t^0 (N, P)
    "tangent",  # (unit, layer, prev state, Z, t) -> t^layer
    "cotangent_start",  # unit -> g^L (N, P)
    "cotangent",  # (unit, layer, prev state, Z, g) -> g^(layer-1)
    "observe",  # state -> (h, log-scale): log q and c come from these
    "arrays",  # state -> the arrays that can leave the float range
)
# ... and the constants it reads there: LOG_SCALE (h = exp(ls) hh renormalised),
# TIED_WEIGHTS (one Z for every step), STEP_VALUES ((N, P) arrays a VJP keeps per step).
STEP_CONSTANTS = ("LOG_SCALE", "TIED_WEIGHTS", "STEP_VALUES")


@dataclass(frozen=True)
class Architecture:
    """One architecture as the rest of vxsim sees it (see the module docstring)."""

    name: str  # network.architecture in a config
    steps: object  # the step functions and constants (STEP_FUNCTIONS, STEP_CONSTANTS)
    axes: dict = field(default_factory=dict)  # {grid axis: default values}, in axis order
    signed_axes: tuple = ()  # axes that may be negative (gate-bias shifts); others are >= 0
    recurrent: bool = False  # fed inputs x_t of variance network.input_variance every step
    gates: int = 1  # N x N matrices a step multiplies by (per weight kind): memory estimate
    streams: tuple = ()  # the rng streams it draws (rng.STREAM_*)
    growth_law: str = "exponential"  # |g^l|^2 ~ exp(rate l), or "power": ~ l^rate
    mean_field: object = None  # hook(config) -> {theory array: values} (theory.architectures)
    fast_paths: frozenset = frozenset()  # engine names with their own kernels for it
    # its mean-field critical line is the plain chi1 = 1 line of theory.critical_sigma_w2
    # (a figure may recompute it on a fine sigma_b2 grid instead of the file's own values)
    dense_critical_line: bool = False
    # the free-probability theory of its Jacobian spectrum (theory.spectrum) applies to it
    spectrum_theory: bool = False
    order: int = None  # place in the lists of messages and docs; None: after those with one

    def __post_init__(self):
        object.__setattr__(
            self, "axes", MappingProxyType({k: list(v) for k, v in self.axes.items()})
        )
        object.__setattr__(self, "signed_axes", tuple(self.signed_axes))
        object.__setattr__(self, "streams", tuple(self.streams))
        object.__setattr__(self, "fast_paths", frozenset(self.fast_paths))

    @property
    def tied_weights(self):
        """True when one Z serves every step (RNNs), False for a fresh Z^l per layer."""
        return bool(self.steps.TIED_WEIGHTS)

    @property
    def step_values(self):
        """(N, P) arrays per step that a VJP keeps beside the state (a gated RNN's gates)."""
        return int(self.steps.STEP_VALUES)

    def problems(self):
        """What is wrong with this declaration: a list of short sentences (empty: none)."""
        out = []
        if not isinstance(self.name, str) or not self.name.isidentifier():
            out.append(f"name {self.name!r} is not an identifier")
        missing = [n for n in STEP_FUNCTIONS if not callable(getattr(self.steps, n, None))]
        missing += [n for n in STEP_CONSTANTS if not hasattr(self.steps, n)]
        if missing:
            out.append(f"steps lack {', '.join(missing)}")
        if self.growth_law not in GROWTH_LAWS:
            out.append(f"growth_law must be one of {', '.join(GROWTH_LAWS)}")
        if not set(self.signed_axes) <= set(self.axes):
            out.append("signed_axes must be among its axes")
        if self.mean_field is not None and not callable(self.mean_field):
            out.append("mean_field must be callable or None")
        if self.order is not None and (
            isinstance(self.order, bool) or not isinstance(self.order, int)
        ):
            out.append("order must be an integer or None")
        if isinstance(self.gates, bool) or not isinstance(self.gates, int) or self.gates < 1:
            out.append("gates must be a positive integer")
        return out
