"""Sweep configuration: TOML in, a validated, immutable ``Config`` out.

The schema is the embedded ``default.toml``: a user file overrides some of its
keys, ``--set section.key=value`` overrides again, and every value is checked
here so that a bad one stops the run before anything is computed or written
(``ConfigError``: one line naming the key and what is allowed).
"""

import copy
import json
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from . import activations, engines, laws, models
from .errors import ConfigError

# The architectures, their grid axes beyond (activation, sigma_w2, sigma_b2) with
# the values used when the config leaves them out, and whether they are recurrent,
# come from their declarations (vxsim.models). The axes are not in default.toml: a
# key that the architecture does not use is an error, not silently ignored.
INPUT_VARIANCE = 1.0  # default variance of the recurrent architectures' inputs x_t
MODES = ("jvp", "vjp", "both")
PRECISIONS = ("float32", "float64", "tf32")  # tf32: float32 states, TF32 GEMMs (cuda only)
STORAGES = ("float64", "float32")  # measure.storage: per-layer records on disk
BACKENDS = ("auto", *engines.names())
PATHS = ("auto", "gemm", "fused")
CUDA_GRAPHS = ("auto", "on", "off")  # engine.cuda_graphs (engines.cuda_graphs)
MAX_WIDTH = 131072  # N^2 / 4 Philox blocks must fit a 32-bit counter word


def optional(section):
    """{key: None} of a section's optional keys: known to the schema, absent from default.toml."""
    if section == "grid":
        return {name: None for arch in models.records() for name in arch.axes}
    if section == "network":
        return {"input_variance": None, "init": None}  # init absent: gaussian, no init axis
    if section == "measure":
        # absent: "float64" / no spectrum, so earlier files' configs are unchanged
        return {"storage": None, "spectrum": None}
    return {}


def __getattr__(name):
    """ARCHITECTURES, RECURRENT and EXTRA_AXES: views of the registry as it is now."""
    if name == "ARCHITECTURES":
        return models.names()
    if name == "RECURRENT":
        return tuple(arch.name for arch in models.records() if arch.recurrent)
    if name == "EXTRA_AXES":
        return {arch.name: dict(arch.axes) for arch in models.records()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_text():
    """The embedded default config, as TOML text."""
    return resources.files("vxsim").joinpath("default.toml").read_text()


def default_raw():
    return tomllib.loads(default_text())


@dataclass(frozen=True)
class Config:
    """A validated sweep: the grid, the networks and what to measure."""

    architecture: str
    widths: tuple
    depth: int
    activations: tuple  # canonical labels, e.g. ("tanh", "leaky_relu(0.2)")
    sigma_w2: np.ndarray
    sigma_b2: np.ndarray
    extra_axes: dict  # {name: values} of the architecture's further grid axes, in order
    input_variance: float  # variance q_x of the i.i.d. RNN inputs x_t (0 for mlp/residual)
    samples: int
    seed: int
    mode: str
    layers: np.ndarray  # recorded layers, 1-based, increasing, always ending at depth
    precision: str
    transient: int
    q0: float
    c0: float
    backend: str
    path: str
    checkpoint: int
    raw: dict  # the merged TOML tree this was built from
    storage: str = "float64"  # on-disk dtype of the per-layer records (measure.storage)
    # measure.spectrum (optional): layers whose Jacobian singular values are measured
    # (empty: none), the tangent block's precision, layers between re-orthonormalisations
    spectrum_layers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    spectrum_precision: str = "float64"
    spectrum_qr_every: int = 4
    inits: tuple = ("gaussian",)  # canonical weight-law labels (network.init, vxsim.laws)
    init_axis: bool = False  # network.init given: the grid has the dim ``init``
    cuda_graphs: str = "auto"  # engine.cuda_graphs: the cuda step loops as replayed graphs

    @property
    def modes(self):
        """The gradient modes measured: ('jvp',), ('vjp',) or both."""
        return ("jvp", "vjp") if self.mode == "both" else (self.mode,)

    @property
    def measured(self):
        """What is measured: the modes, plus 'spectrum' when measure.spectrum asks for it
        (``variables.produced`` reads this)."""
        return self.modes + (("spectrum",) if self.spectrum_layers.size else ())

    def state_dimension(self, width):
        """D, the size of the state h^l whose Jacobian spectrum is measured: ``width``, or
        a multiple where a tangent stacks several N-blocks (the LSTM's [dh; dc]: 2N),
        declared by the model as TANGENT_BLOCKS (default 1)."""
        return width * int(getattr(self.arch.steps, "TANGENT_BLOCKS", 1))

    @property
    def activation_specs(self):
        """[(Activation, param)] in the order of the activation axis."""
        return [activations.parse(label) for label in self.activations]

    @property
    def dtype(self):
        """The states' dtype (tf32 keeps float32 states; only GEMMs round to TF32)."""
        return np.dtype("float32" if self.precision == "tf32" else self.precision)

    @property
    def law_specs(self):
        """[(Law, param)] in the order of the init axis (vxsim.laws)."""
        return [laws.parse(label) for label in self.inits]

    @property
    def gaussian_weights(self):
        """Whether every weight is Gaussian (the only law the fused MLP kernels draw)."""
        return laws.is_gaussian(self.inits)

    @property
    def lead_dims(self):
        """The grid axes before sigma_w2: activation, and init where network.init is given."""
        return ("activation", "init") if self.init_axis else ("activation",)

    @property
    def grid_dims(self):
        """The grid axes: activation, [init], sigma_w2, sigma_b2, then the architecture's."""
        return self.lead_dims + ("sigma_w2", "sigma_b2") + tuple(self.extra_axes)

    @property
    def edge_dims(self):
        """The grid axes without sigma_w2: where a critical sigma_w2 is one number."""
        return tuple(d for d in self.grid_dims if d != "sigma_w2")

    @property
    def grid_shape(self):
        extra = tuple(len(v) for v in self.extra_axes.values())
        lead = (len(self.activations),) + ((len(self.inits),) if self.init_axis else ())
        return lead + (len(self.sigma_w2), len(self.sigma_b2)) + extra

    @property
    def arch(self):
        """The architecture's declaration (vxsim.models.Architecture)."""
        return models.get(self.architecture)

    @property
    def recurrent(self):
        """True for unrolled RNNs: fed inputs x_t every step, weights tied across steps."""
        return self.arch.recurrent

    @property
    def checkpoint_every(self):
        return self.checkpoint or max(1, math.ceil(math.sqrt(self.depth)))

    def canonical(self):
        """A JSON text of the physics-defining content: equal for equal sweeps.

        The backend and path are left out: they change where a sweep runs, not
        what it computes, so a sweep may resume on another backend.
        """
        tree = copy.deepcopy(self.raw)
        tree.pop("engine", None)
        return json.dumps(tree, sort_keys=True)


def _merge(base, override, prefix=""):
    for key, value in override.items():
        name = f"{prefix}{key}"
        if key not in base and key in optional(prefix.rstrip(".")):
            base[key] = value
            continue
        if key not in base:
            section = prefix.rstrip(".") or "the top level"
            allowed = ", ".join(sorted(set(base) | set(optional(prefix.rstrip(".")))))
            raise ConfigError(f"unknown key {name!r} in {section}; allowed: {allowed}")
        if isinstance(base[key], dict) and not _is_leaf_table(name):
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be a table of keys")
            _merge(base[key], value, prefix=f"{name}.")
        else:
            base[key] = value


def _is_leaf_table(name):
    """Keys whose value is itself a small table (a range, a record spec)."""
    return name.startswith("grid.") or name in ("measure.record", "measure.spectrum")


def _parse_value(text):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def parse_set(items):
    """['network.depth=1000', ...] -> nested dict of overrides."""
    tree = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_value(value)
    return tree


def load(path=None, text=None, overrides=()):
    """Build a Config from a TOML file (or text), with --set style overrides."""
    raw = default_raw()
    if path is not None:
        try:
            with open(path, "rb") as fh:
                text = fh.read().decode()
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    if text is not None:
        try:
            user = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config is not valid TOML: {err}") from None
        _merge(raw, user)
    _merge(raw, parse_set(overrides))
    return build(raw)


def _as_list(value):
    return list(value) if isinstance(value, list | tuple) else [value]


def _int(name, value, low=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")
    return value


def _choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _variance_axis(name, value, signed=False):
    """A grid axis: a list of numbers, one number, or {start, stop, num}; >= 0 unless signed."""
    if isinstance(value, dict):
        keys = set(value)
        if keys != {"start", "stop", "num"}:
            raise ConfigError(
                f"{name} as a table needs exactly start, stop, num; got {sorted(keys)}"
            )
        num = _int(f"{name}.num", value["num"], low=1)
        values = np.linspace(
            _float(f"{name}.start", value["start"]), _float(f"{name}.stop", value["stop"]), num
        )
    else:
        values = np.array([_float(name, v) for v in _as_list(value)], dtype=np.float64)
    if values.size == 0:
        raise ConfigError(f"{name} must hold at least one value")
    if not signed and np.any(values < 0):
        raise ConfigError(f"{name} must be >= 0 (a variance); got {values[values < 0][0]:g}")
    if np.unique(values).size != values.size:
        raise ConfigError(f"{name} has repeated values")
    return values


def _float(name, value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return float(value)


def recorded_layers(depth, spec):
    """Layers to record: {every = k} -> k, 2k, ... plus the last; {log = m} -> m log-spaced."""
    if not isinstance(spec, dict) or len(spec) != 1 or not set(spec) <= {"every", "log"}:
        raise ConfigError("measure.record must be { every = K } or { log = M }")
    ((kind, n),) = spec.items()
    n = _int(f"measure.record.{kind}", n, low=1)
    if kind == "every":
        layers = np.arange(n, depth + 1, n)
    else:
        layers = np.unique(np.rint(np.geomspace(1, depth, n)).astype(np.int64))
    return np.union1d(layers, [depth]).astype(np.int64)


def build(raw):
    """Validate a merged TOML tree into a Config."""
    net, grid, mc, meas, eng = (
        raw[k] for k in ("network", "grid", "monte_carlo", "measure", "engine")
    )
    architecture = _choice("network.architecture", net["architecture"], models.names())
    widths = tuple(_int("network.width", w, low=1) for w in _as_list(net["width"]))
    if not widths:
        raise ConfigError("network.width must hold at least one width")
    if max(widths) > MAX_WIDTH:
        raise ConfigError(f"network.width must be <= {MAX_WIDTH}, got {max(widths)}")
    if len(set(widths)) != len(widths):
        raise ConfigError("network.width has repeated values")
    depth = _int("network.depth", net["depth"], low=1)
    labels = []
    for item in _as_list(net["activation"]):
        try:
            act, param = activations.parse(item)
        except ValueError as err:
            raise ConfigError(f"network.activation: {err}") from None
        labels.append(activations.label(act, param))
    if not labels:
        raise ConfigError("network.activation must hold at least one activation")
    if len(set(labels)) != len(labels):
        raise ConfigError("network.activation has repeated entries")
    mode = _choice("measure.mode", meas["mode"], MODES)
    transient = _int("measure.transient", meas["transient"], low=0)
    q0 = _float("measure.q0", meas["q0"])
    if q0 <= 0:
        raise ConfigError(f"measure.q0 must be > 0, got {q0:g}")
    c0 = _float("measure.c0", meas["c0"])
    if not -1.0 < c0 < 1.0:
        raise ConfigError(f"measure.c0 must be in (-1, 1), got {c0:g}")
    extra_axes = _extra_axes(architecture, grid)
    input_variance = _input_variance(architecture, net)
    precision = _choice("measure.precision", meas["precision"], PRECISIONS)
    backend = _choice("engine.backend", eng["backend"], BACKENDS)
    if precision == "tf32" and backend in ("numpy", "numba"):
        raise ConfigError(
            f'measure.precision = "tf32" runs only on the cuda backend (GPU tensor cores); '
            f"engine.backend is {backend!r}"
        )
    seed = _int("monte_carlo.seed", mc["seed"], low=0)
    if seed >= 2**64:
        raise ConfigError("monte_carlo.seed must be < 2**64")
    return Config(
        architecture=architecture,
        widths=widths,
        depth=depth,
        activations=tuple(labels),
        sigma_w2=_variance_axis("grid.sigma_w2", grid["sigma_w2"]),
        sigma_b2=_variance_axis("grid.sigma_b2", grid["sigma_b2"]),
        extra_axes=extra_axes,
        input_variance=input_variance,
        samples=_int("monte_carlo.samples", mc["samples"], low=1),
        seed=seed,
        mode=mode,
        layers=recorded_layers(depth, meas["record"]),
        precision=precision,
        transient=transient,
        q0=q0,
        c0=c0,
        backend=backend,
        path=_choice("engine.path", eng["path"], PATHS),
        checkpoint=_int("engine.checkpoint", eng["checkpoint"], low=0),
        cuda_graphs=_choice("engine.cuda_graphs", eng.get("cuda_graphs", "auto"), CUDA_GRAPHS),
        raw=raw,
        storage=_choice("measure.storage", meas.get("storage", "float64"), STORAGES),
        **spectrum(depth, meas.get("spectrum")),
        inits=_inits(net) if "init" in net else ("gaussian",),
        init_axis="init" in net,
    )


def _inits(net):
    """network.init: one law label or a list of them -> canonical labels (vxsim.laws)."""
    labels = []
    for item in _as_list(net["init"]):
        if not isinstance(item, str):
            raise ConfigError(f"network.init entries must be law names (strings), got {item!r}")
        try:
            law, param = laws.parse(item)
        except ValueError as err:
            raise ConfigError(f"network.init: {err}") from None
        labels.append(laws.label(law, param))
    if not labels:
        raise ConfigError(f"network.init must hold at least one law; allowed: {_law_names()}")
    if len(set(labels)) != len(labels):
        raise ConfigError("network.init has repeated entries")
    return tuple(labels)


def _law_names():
    return ", ".join(
        f"{r.name}({r.param_name})" if r.takes_param else r.name for r in laws.REGISTRY.values()
    )


SPECTRUM_KEYS = ("layers", "log", "precision", "qr_every")
SPECTRUM_PRECISIONS = ("float64", "float32")


def spectrum(depth, spec):
    """measure.spectrum -> {spectrum_layers, spectrum_precision, spectrum_qr_every}.

    ``{ layers = [16, 64] }`` or ``{ log = K }`` (K log-spaced layers, as measure.record),
    plus ``precision`` ("float64" default, or "float32") and ``qr_every`` (layers between
    re-orthonormalisations of the tangent block, >= 1; default 4 in float64, 1 in float32).
    Absent: no spectrum.
    """
    if spec is None:
        return {}
    name = "measure.spectrum"
    if not isinstance(spec, dict):
        raise ConfigError(f"{name} must be a table {{ layers = [...] }} or {{ log = K }}")
    unknown = sorted(set(spec) - set(SPECTRUM_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {name}.{unknown[0]}; allowed: {', '.join(SPECTRUM_KEYS)}")
    if ("layers" in spec) == ("log" in spec):
        raise ConfigError(f"{name} needs exactly one of layers = [...] or log = K")
    if "log" in spec:
        k = _int(f"{name}.log", spec["log"], low=1)
        layers = np.unique(np.rint(np.geomspace(1, depth, k)).astype(np.int64))
    else:
        values = [_int(f"{name}.layers", v) for v in _as_list(spec["layers"])]
        if not values:
            raise ConfigError(f"{name}.layers must hold at least one layer")
        bad = [v for v in values if not 1 <= v <= depth]
        if bad:
            raise ConfigError(f"{name}.layers must lie in 1..{depth} (network.depth); got {bad[0]}")
        if len(set(values)) != len(values):
            raise ConfigError(f"{name}.layers has repeated values")
        layers = np.array(sorted(values), dtype=np.int64)
    precision = _choice(f"{name}.precision", spec.get("precision", "float64"), SPECTRUM_PRECISIONS)
    qr_every = _int(f"{name}.qr_every", spec.get("qr_every", 4 if precision == "float64" else 1), 1)
    return {
        "spectrum_layers": layers,
        "spectrum_precision": precision,
        "spectrum_qr_every": qr_every,
    }


def _extra_axes(architecture, grid):
    """The architecture's further grid axes; an axis it does not use is an error."""
    arch = models.get(architecture)
    wanted = arch.axes
    for name in optional("grid"):
        if name in grid and name not in wanted:
            users = [a.name for a in models.records() if name in a.axes]
            raise ConfigError(
                f"grid.{name} does not apply to architecture {architecture!r} "
                f"(it is an axis of {', '.join(users)})"
            )
    out = {}
    for name, default in wanted.items():
        value = grid.get(name, default)
        out[name] = _variance_axis(f"grid.{name}", value, signed=name in arch.signed_axes)
    return out


def _input_variance(architecture, net):
    """q_x, the variance of each entry of the RNN inputs x_t (zero allowed)."""
    if not models.get(architecture).recurrent:
        if "input_variance" in net:
            users = [a.name for a in models.records() if a.recurrent]
            raise ConfigError(
                f"network.input_variance applies to {_in_words(users)}, not {architecture!r}"
            )
        return 0.0
    value = _float("network.input_variance", net.get("input_variance", INPUT_VARIANCE))
    if value < 0:
        raise ConfigError(f"network.input_variance must be >= 0, got {value:g}")
    return value


def _in_words(names):
    """'a, b and c' (or 'a', or 'a and b')."""
    names = list(names) or ["none"]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
