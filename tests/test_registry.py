"""One place per concept: the architecture and engine registries, and downward imports (issue 13).

* No module outside ``vxsim/models/`` spells an architecture's name as a string
  literal: config, engines, theory, analysis and plot ask the declared record.
* The backends are declared once (``vxsim.engines.ENGINES``): config and the
  command line take their names from there.
* ``lint-imports`` (import-linter, the layers contract in pyproject.toml) passes.
"""

import ast
import os
import subprocess
import sys
import types

import click
import pytest

from vxsim import cli, config, engines, models, rng
from vxsim.errors import VxsimError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "vxsim")


def spelled_names(source, names):
    """[(line, literal)] of the string constants in ``source`` that equal one of ``names``."""
    return [
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    ]


def _modules_outside_models():
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if os.path.relpath(folder, PACKAGE).split(os.sep)[0] == "models":
            continue
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def test_the_grep_finds_a_spelled_name():
    names = set(models.names())
    source = 'ok = "an lstm in prose"\nif arch == "lstm":\n    pass\n'
    assert spelled_names(source, names) == [(2, "lstm")]
    assert spelled_names('"""The MLP, in a docstring."""', names) == []


def test_no_architecture_name_outside_the_models():
    names = set(models.names())
    assert {"mlp", "residual", "rnn", "gru", "lstm"} <= names  # the built-ins registered
    found = []
    for path in _modules_outside_models():
        with open(path) as fh:
            for line, literal in spelled_names(fh.read(), names):
                found.append(f"{os.path.relpath(path, ROOT)}:{line}: {literal!r}")
    assert not found, "architecture names spelled outside vxsim/models:\n" + "\n".join(found)


def test_every_declared_architecture_is_complete():
    streams = {v for k, v in vars(rng).items() if k.startswith("STREAM_")}
    for arch in models.records():
        assert arch.problems() == [], arch.name
        assert models.get(arch.name) is arch
        assert getattr(arch.steps, "ARCHITECTURE", arch) is arch
        assert set(arch.fast_paths) <= set(engines.names()), arch.name
        for s in arch.streams:  # a declared stream, or a gate's offset from one
            gate = any(0 <= s - g < 16 for g in (rng.STREAM_GATE, rng.STREAM_GATE_INPUT))
            assert s in streams or gate, (arch.name, s)
        cfg = config.load(overrides=[f'network.architecture="{arch.name}"'])
        assert cfg.arch is arch and list(cfg.extra_axes) == list(arch.axes)
        assert cfg.recurrent == arch.recurrent
        assert (cfg.input_variance == config.INPUT_VARIANCE) == arch.recurrent


def test_registry_refuses_a_second_name_and_an_incomplete_record():
    mlp = models.get("mlp")
    clone = models.Architecture(name="mlp", steps=mlp.steps)
    with pytest.raises(VxsimError, match="already registered"):
        models.register(clone)
    empty = types.SimpleNamespace(LOG_SCALE=False, TIED_WEIGHTS=False, STEP_VALUES=0)
    with pytest.raises(VxsimError, match="steps lack start, step"):
        models.register(models.Architecture(name="broken", steps=empty))
    with pytest.raises(VxsimError, match="growth_law must be one of"):
        models.register(models.Architecture(name="odd", steps=mlp.steps, growth_law="linear"))
    with pytest.raises(VxsimError, match="unknown architecture 'nothing'; allowed: mlp, residual"):
        models.get("nothing")
    assert "broken" not in models.names() and "odd" not in models.names()


def test_the_backends_are_declared_once():
    assert engines.choices() == ("auto", *engines.ENGINES)
    assert config.BACKENDS == engines.choices()
    option = next(p for p in cli.sweep.params if p.name == "backend")
    assert isinstance(option.type, click.Choice)
    assert tuple(option.type.choices) == engines.choices()
    with open(os.path.join(PACKAGE, "cli.py")) as fh:
        tree = ast.parse(fh.read())
    for node in ast.walk(tree):  # no list of backend names of its own
        if isinstance(node, ast.List | ast.Tuple):
            items = {e.value for e in node.elts if isinstance(e, ast.Constant)}
            assert not items & set(engines.names()), f"cli.py:{node.lineno} lists backends"


def test_imports_go_downward():
    """The layers contract of pyproject.toml ([tool.importlinter]) holds."""
    exe = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    if not os.path.exists(exe):
        pytest.skip("lint-imports (import-linter, in the test extra) is not installed")
    done = subprocess.run(
        [exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
