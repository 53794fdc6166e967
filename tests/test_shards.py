"""Shards and merge: N shard files merged equal one single-process run, bit for bit.

A work unit is (width, sample). ``shard_units`` splits the units of a config
into N shards balanced by cost (width^2 * depth * grid points); ``merge``
refuses parts of another config or version, gaps and duplicates, naming them.
"""

import hashlib
import itertools
import json
import os
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_same_content, run_shards, small_config

import vxsim
from vxsim import shards
from vxsim.cli import main
from vxsim.errors import VxsimError
from vxsim.store import shardfile
from vxsim.store.summary import summarise_file
from vxsim.sweep import shard_units, work_units

# Two widths of different cost, 4 samples: 8 units, enough for 7 shards. Both
# modes, so every per-unit variable is written.
KEYS = dict(
    network__width=[8, 16],
    network__depth=12,
    monte_carlo__samples=4,
    measure__mode="both",
    grid__sigma_w2={"start": 0.5, "stop": 4.0, "num": 7},
    engine__backend="numpy",
)
CONFIG = small_config(**KEYS)
CLI_KEYS = [
    "--set",
    "network.width=[8, 16]",
    "--set",
    "network.depth=12",
    "--set",
    "monte_carlo.samples=4",
    "--set",
    'measure.mode="both"',
    "--set",
    "grid.sigma_w2={start = 0.5, stop = 4.0, num = 7}",
    "--set",
    'engine.backend="numpy"',
    "-q",
]
# Root attributes a merged file may hold differently from a single run of the
# same config on the same machine and backend: when it was written, and the
# parts it came from. Everything else (datasets, coordinates, their attributes,
# the analysis group and its attributes, the other root attributes) must agree.
MAY_DIFFER = {"created", "merged_from"}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("single") / "single.h5")
    vxsim.run_sweep(CONFIG, path)
    return path


def _digest(paths):
    return {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths}


# --- the split ------------------------------------------------------------------------


def _loads(config, count):
    return [
        sum(shards.unit_cost(config, w) for _, w, _ in shard_units(config, i, count))
        for i in range(1, count + 1)
    ]


def _best_max_load(costs, count):
    """Brute force: the smallest possible largest shard load over every assignment."""
    return min(
        max(sum(c for c, k in zip(costs, owner, strict=True) if k == s) for s in range(count))
        for owner in itertools.product(range(count), repeat=len(costs))
    )


@pytest.mark.parametrize(
    "widths,samples,count",
    [([8, 16], 4, 3), ([8, 24, 40], 2, 4), ([16, 64], 3, 2), ([32], 5, 5), ([8, 16, 32], 2, 3)],
)
def test_shards_partition_the_units_within_the_lpt_bound(widths, samples, count):
    """Every unit in exactly one shard, none empty, run order kept; the largest load is
    within Graham's bound (4/3 - 1/(3N)) of the brute-force optimum."""
    config = small_config(network__width=widths, monte_carlo__samples=samples)
    parts = [shard_units(config, i, count) for i in range(1, count + 1)]
    everything = [u for part in parts for u in part]
    assert sorted(everything) == sorted(work_units(config))
    assert len(set(everything)) == len(everything)
    assert all(parts) and all(part == sorted(part) for part in parts)
    assert parts == [shard_units(config, i, count) for i in range(1, count + 1)]
    costs = [shards.unit_cost(config, w) for _, w, _ in work_units(config)]
    best = _best_max_load(costs, count)
    assert max(_loads(config, count)) <= (4 / 3 - 1 / (3 * count)) * best
    assert shards.shard_loads(config, count) == _loads(config, count)


def test_balanced_by_cost_not_by_count():
    """3 units of width 64 (cost 16x) and 3 of width 16 in 2 shards: equal counts would put
    two wide units and one narrow in one shard (8448 x); by cost one shard takes two wide
    units (8192 x, the optimum) and the other the rest, 2 units against 4."""
    config = small_config(network__width=[16, 64], monte_carlo__samples=3)
    unit = shards.unit_cost(config, 1)
    assert shards.unit_cost(config, 64) == 64**2 * unit
    parts = [shard_units(config, i, 2) for i in (1, 2)]
    assert sorted(len(p) for p in parts) == [2, 4]
    assert max(_loads(config, 2)) == 8192 * unit
    costs = [shards.unit_cost(config, w) for _, w, _ in work_units(config)]
    assert _best_max_load(costs, 2) == 8192 * unit


def test_parse_shard_and_slurm_array_index():
    assert shards.parse_shard("2/3") == (2, 3)
    assert shards.parse_shard((1, 1)) == (1, 1)
    assert shards.parse_shard("auto/4", environ={"SLURM_ARRAY_TASK_ID": "4"}) == (4, 4)
    for bad, words in [
        ("0/3", "1..3"),
        ("4/3", "1..3"),
        ("3", "I/N"),
        ("a/b", "I/N"),
        ("1/0", ">= 1"),
        ((2, 1), "1..1"),
    ]:
        with pytest.raises(VxsimError, match=words):
            shards.parse_shard(bad, environ={})
    with pytest.raises(VxsimError, match=r"SLURM_ARRAY_TASK_ID, which is not set"):
        shards.parse_shard("auto/3", environ={})
    with pytest.raises(VxsimError, match=r"SLURM_ARRAY_TASK_ID=0 is not in 1..3.*--array=1-3"):
        shards.parse_shard("auto/3", environ={"SLURM_ARRAY_TASK_ID": "0"})


def test_more_shards_than_units_is_refused_before_any_file(tmp_path):
    out = tmp_path / "p.h5"
    with pytest.raises(VxsimError, match="only 8 work units.*at most 8 shards"):
        vxsim.run_sweep(CONFIG, str(out), shard=(9, 9))
    assert not out.exists()


# --- shard + merge = single run ------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 3, 7])
def test_shard_and_merge_equal_the_single_run(tmp_path, single, count):
    parts = run_shards(tmp_path, CONFIG, count)
    for i, part in enumerate(parts, start=1):
        info = shardfile.read(part)
        owned = shard_units(CONFIG, i, count)
        expect = np.zeros((2, 4), dtype=bool)
        for wi, _, s in owned:
            expect[wi, s] = True
        with h5py.File(part, "r") as f:
            assert f.attrs["status"] == "shard-complete" and "analysis" not in f
            np.testing.assert_array_equal(f["completed"][...].astype(bool), expect)
            unit_done = np.isfinite(f["log_q"][...]).any(axis=(1, 2, 3, 5))
            np.testing.assert_array_equal(unit_done, expect)  # its units, nothing else
            assert f["log_q"].compression == "gzip"
        assert (info["index"], info["count"]) == (i, count)
        np.testing.assert_array_equal(info["mask"], expect)
    before = _digest(parts)
    merged = str(tmp_path / "sweep.h5")
    assert vxsim.merge(parts[::-1], merged) == merged  # any order of the parts
    assert _digest(parts) == before
    assert_same_content(merged, single, MAY_DIFFER)
    with h5py.File(merged, "r") as f:
        assert json.loads(f.attrs["merged_from"]) == parts[::-1]
        assert "shard_index" not in f.attrs and "shard_units" not in f


def test_cli_shards_from_slurm_array_show_and_merge(tmp_path, single):
    runner = CliRunner()
    parts = []
    for task in ("1", "2"):
        part = str(tmp_path / f"part-{task}.h5")
        r = runner.invoke(
            main,
            ["sweep", "--shard", "auto/2", "-o", part, *CLI_KEYS],
            env={"SLURM_ARRAY_TASK_ID": task},
        )
        assert r.exit_code == 0, r.output
        parts.append(part)
    r = runner.invoke(main, ["show", parts[1], "--json"])
    shown = json.loads(r.output)
    assert shown["status"] == "shard-complete"
    assert shown["shard"] == {"index": 2, "count": 2, "units": 4, "units_done": 4}
    r = runner.invoke(main, ["show", parts[1]])
    assert "(shard-complete, 4/8 work units)" in r.output and "shard       2/2" in r.output
    r = runner.invoke(main, ["boundary", parts[0]])
    assert r.exit_code == 2 and "one shard of a sweep" in r.output

    merged = str(tmp_path / "sweep.h5")
    r = runner.invoke(main, ["merge", *parts, "-o", merged])
    assert r.exit_code == 0, r.output
    assert "complete, 8/8 work units" in r.output
    assert_same_content(merged, single, MAY_DIFFER)

    r = runner.invoke(main, ["merge", parts[0], "-o", str(tmp_path / "half.h5")])
    assert r.exit_code == 2
    assert r.output.startswith("vxsim: error: cannot merge: 4 work unit(s) missing")
    assert r.output.count("\n") == 1 and "no input is shard 2/2" in r.output
    r = runner.invoke(main, ["sweep", "--shard", "3/2", "-o", str(tmp_path / "x.h5"), *CLI_KEYS])
    assert r.exit_code == 2 and "vxsim: error: --shard 3/2" in r.output


# --- refusals ----------------------------------------------------------------------


def test_merge_refuses_other_configs_and_versions(tmp_path):
    parts = run_shards(tmp_path, CONFIG, 2)
    other = small_config(**dict(KEYS, network__depth=10, monte_carlo__seed=5))
    odd = str(tmp_path / "odd.h5")
    vxsim.run_sweep(other, odd, shard=(2, 2))
    with pytest.raises(VxsimError) as err:
        vxsim.merge([parts[0], odd], str(tmp_path / "m.h5"))
    msg = str(err.value)
    assert f"{odd} has another config than {parts[0]}" in msg
    assert f"monte_carlo.seed ({parts[0]}: 0, {odd}: 5)" in msg
    assert f"network.depth ({parts[0]}: 12, {odd}: 10)" in msg

    old = str(tmp_path / "old.h5")
    shutil.copy(parts[1], old)
    with h5py.File(old, "r+") as f:
        f.attrs["vxsim_version"] = "0.0.1"
    with pytest.raises(VxsimError, match=rf"{old} was written by vxsim 0\.0\.1, .* by vxsim 0\.1"):
        vxsim.merge([parts[0], old], str(tmp_path / "m.h5"))
    assert not os.path.exists(tmp_path / "m.h5")


def test_merge_names_duplicates_and_gaps(tmp_path):
    parts = run_shards(tmp_path, CONFIG, 3)
    copy = str(tmp_path / "again.h5")
    shutil.copy(parts[0], copy)
    owned = shard_units(CONFIG, 1, 3)
    with pytest.raises(VxsimError) as err:
        vxsim.merge([*parts, copy], str(tmp_path / "m.h5"))
    msg = str(err.value)
    assert f"{len(owned)} work unit(s) present twice" in msg
    for _, width, sample in owned:
        assert f"(width={width}, sample={sample}) in {parts[0]} and {copy}" in msg
    assert "missing" not in msg

    with pytest.raises(VxsimError) as err:
        vxsim.merge([parts[0], parts[2]], str(tmp_path / "m.h5"))
    msg = str(err.value)
    gone = shard_units(CONFIG, 2, 3)
    assert (
        f"{len(gone)} work unit(s) missing: "
        + ", ".join(f"(width={w}, sample={s})" for _, w, s in gone)
        in msg
    )
    assert msg.endswith("no input is shard 2/3")
    with pytest.raises(VxsimError, match="is given twice"):
        vxsim.merge([parts[0], os.path.join(str(tmp_path), ".", "part-1.h5")], str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path)) == ["again.h5", "part-1.h5", "part-2.h5", "part-3.h5"]


def test_killed_shard_counts_as_missing_until_resumed(tmp_path, single, monkeypatch):
    from vxsim.engines import numpy_ref

    real = numpy_ref.run_unit
    calls = []

    def dies_in_second_unit(config, width, sample):
        calls.append((width, sample))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config, width, sample)

    parts = run_shards(tmp_path, CONFIG, 3)
    os.remove(parts[1])
    monkeypatch.setattr(numpy_ref, "run_unit", dies_in_second_unit)
    with pytest.raises(KeyboardInterrupt):
        vxsim.run_sweep(CONFIG, parts[1], shard="2/3")
    owned = shard_units(CONFIG, 2, 3)
    assert len(owned) == 3 and calls == [(w, s) for _, w, s in owned[:2]]
    summary = summarise_file(parts[1])
    assert summary["status"] == "running" and summary["shard"]["units_done"] == 1

    merged = str(tmp_path / "sweep.h5")
    with pytest.raises(VxsimError) as err:
        vxsim.merge(parts, merged)
    msg = str(err.value)
    left = ", ".join(f"(width={w}, sample={s})" for _, w, s in owned[1:])
    assert f"2 work unit(s) missing: {left}; " in msg
    assert f"{parts[1]} (shard 2/3) is unfinished, 1 of 3 units done" in msg
    assert not os.path.exists(merged)

    with pytest.raises(VxsimError, match="as shard 1/3: it is shard 2/3"):
        vxsim.run_sweep(CONFIG, parts[1], shard=(1, 3), resume=True)
    with pytest.raises(VxsimError, match="resume it with --shard 2/3"):
        vxsim.run_sweep(CONFIG, parts[1], resume=True)
    with pytest.raises(VxsimError, match="it is a whole sweep; omit --shard"):
        vxsim.run_sweep(CONFIG, single, shard=(2, 3), resume=True)

    calls.clear()
    monkeypatch.setattr(
        numpy_ref, "run_unit", lambda c, w, s: calls.append((w, s)) or real(c, w, s)
    )
    vxsim.run_sweep(CONFIG, parts[1], shard=(2, 3), resume=True)
    assert calls == [(w, s) for _, w, s in owned[1:]]  # only the shard's unfinished units
    vxsim.merge(parts, merged)
    assert_same_content(merged, single, MAY_DIFFER)


def test_merge_is_rerunnable_atomic_and_leaves_inputs_alone(tmp_path, single, monkeypatch):
    parts = run_shards(tmp_path, CONFIG, 2)
    merged = str(tmp_path / "sweep.h5")
    before = _digest(parts)
    vxsim.merge(parts, merged)
    first = _digest([merged])[merged]

    with pytest.raises(VxsimError, match="exists; pass --overwrite"):
        vxsim.merge(parts, merged)
    assert _digest([merged])[merged] == first
    for output in (parts[0], os.path.join(str(tmp_path), "..", tmp_path.name, "part-2.h5")):
        with pytest.raises(VxsimError, match="it is one of the inputs"):
            vxsim.merge(parts, output, overwrite=True)

    from vxsim import sweep

    def killed_while_finishing(path, config):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "finish", killed_while_finishing)
    with pytest.raises(KeyboardInterrupt):
        vxsim.merge(parts, str(tmp_path / "never.h5"))
    with pytest.raises(KeyboardInterrupt):
        vxsim.merge(parts, merged, overwrite=True)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["part-1.h5", "part-2.h5", "sweep.h5"]
    assert _digest([merged])[merged] == first  # a failed --overwrite keeps the old output

    vxsim.merge(parts, merged, overwrite=True)
    assert_same_content(merged, single, MAY_DIFFER)
    assert _digest(parts) == before
