"""Progress: bars on a terminal, plain lines in a batch log, JSON lines, or nothing."""

import io
import json

from conftest import run_cli

from vxsim import progress


def _sweep(tmp_path, *args):
    return run_cli(
        "sweep", "-o", str(tmp_path / "p.h5"), "--backend", "numpy",
        "--set", "network.width=[8, 12]", "--set", "network.depth=20",
        "--set", "monte_carlo.samples=2", *args,
    )  # fmt: skip


def test_json_lines_for_dashboards(tmp_path):
    r = _sweep(tmp_path, "--progress", "json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines()]
    units = [(e["done"], e["total"]) for e in events if e["event"] == "unit"]
    assert units == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert all("time" in e for e in events)


def test_a_batch_log_gets_plain_lines_and_quiet_gets_nothing(tmp_path):
    r = _sweep(tmp_path, "--progress", "log")  # stderr is a pipe here: no bar
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines == [f"vxsim: {k}/4 work units done" for k in (1, 2, 3, 4)]
    r = _sweep(tmp_path, "-q", "--overwrite")
    assert r.returncode == 0 and r.stderr == ""


def test_steps_are_throttled_with_rate_and_eta():
    """Engines report steps through progress.step: a log line at most every ``every``
    seconds, with the rate and ETA of the unit; nothing when nobody listens."""
    progress.step(1, 10)  # nobody listens: a no-op
    clock = iter([0.0, 1.0, 2.0, 31.0, 32.0, 62.0]).__next__
    out = io.StringIO()
    rep = progress.Reporter("log", stream=out, every=30.0, clock=clock)
    with progress.listening(rep):
        progress.starting("width 8, sample 0")
        for done in range(1, 7):
            progress.step(done, 12)
    lines = out.getvalue().splitlines()
    assert lines[0] == "vxsim: width 8, sample 0: 4/12 steps, 0.1/s, ETA 62 s"  # 30 s on
    assert lines[1].startswith("vxsim: width 8, sample 0: 6/12 steps") and len(lines) == 2
    events = io.StringIO()
    rep = progress.Reporter("json", stream=events, every=0.0)
    with progress.listening(rep):
        progress.notice("compiling")
        progress.step(2, 4)
        progress.step(3, 4)
    kinds = [json.loads(x)["event"] for x in events.getvalue().splitlines()]
    assert kinds == ["notice", "steps", "steps"]


def test_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    rep = progress.Reporter("auto", stream=out)
    assert rep.kind == "bar"
    rep.units(0, 3)
    rep.units(2, 3)
    with progress.listening(rep):
        progress.step(5, 10)
    rep.close()
    assert "work units" in out.getvalue() and "2/3" in out.getvalue()


class _Listener:
    def __init__(self):
        self.seen = []

    def steps(self, done, total):
        self.seen.append((done, total))


def test_the_engines_report_their_steps():
    """numpy (generic driver) and numba (GEMM and fused paths) tell progress.step every
    forward and backward step of a unit, ending at the total."""
    from conftest import small_config

    from vxsim.engines import numba_cpu, numpy_ref

    cfg = small_config(
        network__width=16, network__depth=12, measure__mode="both", engine__checkpoint=4
    )
    for run in (
        numpy_ref.run_unit,
        lambda c, w, s: numba_cpu.run_unit(c, w, s, path="gemm"),
        lambda c, w, s: numba_cpu.run_unit(c, w, s, path="fused"),
    ):
        listener = _Listener()
        with progress.listening(listener):
            run(cfg, 16, 0)
        seen = listener.seen
        done = [d for d, _ in seen]
        total = seen[-1][1]
        # forward 12; backward: 3 restarts, 3 x 3 recomputations, 11 backward steps
        assert total == 12 + 3 + 9 + 11 and done[-1] == total
        assert done == sorted(done) and all(t == total for _, t in seen)


def test_the_spectrum_pass_reports_its_layers_as_a_phase():
    """A unit with measure.spectrum: the regular pass's steps under the unit's label, then
    the spectrum pass's layers counted anew under "<unit>, spectrum", up to its last
    spectrum layer (a log line at every step with every = 0)."""
    from conftest import small_config

    from vxsim import engines

    cfg = small_config(
        network__width=8, network__depth=9, measure__mode="jvp",
        measure__spectrum={"layers": [3, 7]}, engine__backend="numpy",
    )  # fmt: skip
    out = io.StringIO()
    rep = progress.Reporter("log", stream=out, every=0.0)
    with progress.listening(rep):
        progress.starting("width 8, sample 0")
        engines.run(engines.get("numpy"), cfg, 8, 0)
    lines = out.getvalue().splitlines()
    regular = [x for x in lines if x.startswith("vxsim: width 8, sample 0: ")]
    spectral = [x for x in lines if x.startswith("vxsim: width 8, sample 0, spectrum: ")]
    assert regular and regular[-1].startswith("vxsim: width 8, sample 0: 9/9 steps")
    assert [x.split(": ")[2].split(" ")[0] for x in spectral] == [f"{k}/7" for k in range(1, 8)]
    assert lines.index(regular[-1]) < lines.index(spectral[0])
    rep.units(1, 1)  # the next unit starts under its own label again
    rep.unit("width 8, sample 1")
    assert rep.label == "width 8, sample 1"
