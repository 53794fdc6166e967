"""The command line: the main commands work, and every bad input is one line and exit 2."""

import json

import pytest
from conftest import run_cli

run = run_cli


SMALL = [
    "--set",
    "network.width=16",
    "--set",
    "network.depth=20",
    "--set",
    "monte_carlo.samples=2",
    "--backend",
    "numpy",
]


def test_sweep_show_info(tmp_path):
    out = tmp_path / "s.h5"
    r = run("sweep", "-o", str(out), *SMALL, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["status"] == "complete" and summary["units_done"] == 2
    assert summary["activation"] == ["tanh", "relu"]
    relu = [c for c in summary["crossings"] if c["activation"] == "relu"]
    assert relu and all(1.5 < c["sigma_w2"] < 2.6 for c in relu)

    r = run("show", str(out))
    assert r.returncode == 0 and "2/2 work units" in r.stdout
    r = run("show", str(out), "--json")
    assert json.loads(r.stdout)["depth"] == 20

    r = run("info", "--json")
    assert r.returncode == 0
    info = json.loads(r.stdout)
    assert info["backends"]["numpy"] is True and "tanh" in info["activations"]
    assert run("info").returncode == 0


def test_config_file_and_set_override(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[network]\nwidth = [8]\ndepth = 7\nactivation = ["leaky_relu(0.2)"]\n'
        "[grid]\nsigma_w2 = [1.0, 2.0]\nsigma_b2 = 0.1\n[monte_carlo]\nsamples = 1\n"
    )
    out = tmp_path / "c.h5"
    r = run(
        "sweep",
        str(cfg),
        "-o",
        str(out),
        "--set",
        "network.depth=9",
        "--backend",
        "numpy",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["depth"] == 9 and s["activation"] == ["leaky_relu(0.2)"] and s["sigma_b2"] == [0.1]


BAD = [
    (["--set", "network.foo=1"], "unknown key 'network.foo'"),
    (["--set", "nosuch.key=1"], "unknown key 'nosuch'"),
    (["--set", 'network.activation=["tanhh"]'], "unknown activation 'tanhh'; allowed:"),
    (["--set", 'network.activation=["tanh(0.3)"]'], "takes no parameter"),
    (["--set", "grid.sigma_w2=[-1.0, 2.0]"], "grid.sigma_w2 must be >= 0"),
    (["--set", "grid.sigma_b2=[nan]"], "grid.sigma_b2 must be finite"),
    (["--set", "grid.sigma_w2={start=1, stop=inf, num=3}"], "grid.sigma_w2.stop must be finite"),
    (["--set", "network.width=0"], "network.width must be >= 1"),
    (["--set", "network.depth=0"], "network.depth must be >= 1"),
    (["--set", "network.depth=2.5"], "network.depth must be an integer"),
    (["--set", 'measure.mode="fwd"'], "measure.mode must be one of jvp, vjp, both"),
    (["--set", 'measure.precision="float16"'], "measure.precision must be one of"),
    (["--set", "measure.record={every=0}"], "measure.record.every must be >= 1"),
    (["--set", "monte_carlo.samples=0"], "monte_carlo.samples must be >= 1"),
    (["--set", 'network.architecture="cnn"'], "network.architecture must be one of"),
    (["--set", "depth"], "--set expects section.key=value"),
    (
        ["--set", "network.width=[100000]", "--set", "grid.sigma_w2={start=1,stop=4,num=400}"],
        "needs about",
    ),
    (["missing.toml"], "cannot read config missing.toml"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, message):
    out = tmp_path / "never.h5"
    r = run("sweep", *args, "-o", str(out), cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vxsim: error: "), r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_bad_toml_and_show_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[network\nwidth = 3")
    r = run("sweep", str(bad), "-o", str(tmp_path / "x.h5"))
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    r = run("show", str(tmp_path / "nothing.h5"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    r = run("show", str(bad))
    assert r.returncode == 2 and "not a readable HDF5 file" in r.stderr


def test_existing_output_refused_on_cli(tmp_path):
    out = tmp_path / "s.h5"
    assert run("sweep", "-o", str(out), *SMALL).returncode == 0
    r = run("sweep", "-o", str(out), *SMALL)
    assert r.returncode == 2 and "--resume" in r.stderr
