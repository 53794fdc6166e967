"""merge --virtual: HDF5 virtual datasets over the parts, equal bit for bit to a copying merge;
--materialise: one plain file, the copying merge's in every dataset.

The 200-shard checks (200 units of a tiny sweep, one unit a shard) are marked slow:
writing 200 shard files takes about 2 minutes on a loaded 2-core machine (each shard
is sealed by rewriting the whole sweep's layout). A 3-shard sweep checks the same
equalities, the refusals, the paths and the CLI quickly.
"""

import json
import os
import shutil

import h5py
import pytest
from click.testing import CliRunner
from conftest import assert_same_content, run_shards, small_config

import vxsim
from vxsim.cli import main
from vxsim.errors import VxsimError
from vxsim.store.summary import summarise_file
from vxsim.virtual import source_name

KEYS = dict(
    network__width=[8, 16],
    network__depth=12,
    monte_carlo__samples=4,
    measure__mode="both",
    grid__sigma_w2={"start": 0.5, "stop": 4.0, "num": 7},
    engine__backend="numpy",
)
SMALL = small_config(**KEYS)
# 200 work units: widths [4, 6] x 100 samples, depth 5, both modes.
TINY = small_config(
    network__width=[4, 6],
    network__depth=5,
    monte_carlo__samples=100,
    measure__mode="both",
    engine__backend="numpy",
)
# Root attributes a merged file may hold differently from another merge of the same parts.
MAY_DIFFER = {"created", "merged_from", "virtual"}


def _is_virtual(path, name="log_q"):
    with h5py.File(path, "r") as f:
        return f[name].is_virtual, int(f.attrs.get("virtual", 0))


# --- 3 shards: fast --------------------------------------------------------------------


@pytest.fixture(scope="module")
def few(tmp_path_factory):
    """A job folder: shards/part-1..3.h5 and the copying merge sweep.h5 beside them."""
    folder = tmp_path_factory.mktemp("job")
    parts = run_shards(folder / "shards", SMALL, 3, "part-{i:03d}.h5")
    copied = str(folder / "copied.h5")
    vxsim.merge(parts, copied)
    return folder, parts, copied


def test_virtual_merge_equals_the_copying_merge_and_materialises_to_it(few, tmp_path):
    folder, parts, copied = few
    virtual = str(folder / "virtual.h5")
    assert vxsim.merge(parts[::-1], virtual, virtual=True) == virtual
    assert _is_virtual(virtual) == (True, 1)
    assert_same_content(virtual, copied, MAY_DIFFER, storage=False)
    with h5py.File(virtual, "r") as f:
        assert json.loads(f.attrs["merged_from"]) == parts[::-1]
        for name in ("log_q", "corr", "log_tangent_norm", "log_grad_norm", "diverged"):
            assert f[name].is_virtual
            assert {s.file_name for s in f[name].virtual_sources()} == {
                f"shards/part-{i:03d}.h5" for i in (1, 2, 3)
            }
    plain = str(tmp_path / "plain.h5")
    assert vxsim.materialise(virtual, plain) == plain
    assert _is_virtual(plain) == (False, 0)
    assert_same_content(plain, copied, MAY_DIFFER)  # chunks and compression too
    with h5py.File(plain, "r") as f:
        assert json.loads(f.attrs["merged_from"]) == parts[::-1]


def test_the_folder_moves_with_relative_paths_and_outside_parts_are_absolute(
    few, tmp_path, monkeypatch
):
    folder, parts, copied = few
    job = tmp_path / "job"
    shutil.copytree(folder / "shards", job / "shards")
    vxsim.merge(sorted(str(p) for p in (job / "shards").iterdir()), str(job / "v.h5"), virtual=True)
    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(str(job), str(moved))
    monkeypatch.chdir(tmp_path)  # relative sources are found beside the file, not the cwd
    assert_same_content(str(moved / "v.h5"), copied, MAY_DIFFER, storage=False)
    outside = str(tmp_path / "out" / "v.h5")
    os.makedirs(os.path.dirname(outside))
    vxsim.merge(parts, outside, virtual=True)
    with h5py.File(outside, "r") as f:
        assert {s.file_name for s in f["corr"].virtual_sources()} == set(parts)
    assert source_name("/a/b/c.h5", "/a") == "b/c.h5"
    assert source_name("/a/b/c.h5", "/a/x") == "/a/b/c.h5"
    assert source_name("/a/100%/c.h5", "/a") == "100%%/c.h5"  # HDF5 reads '%' as a pattern


def test_virtual_merge_refuses_gaps_duplicates_and_other_sweeps(few, tmp_path):
    folder, parts, _ = few
    out = str(tmp_path / "v.h5")
    with pytest.raises(VxsimError, match=r"^cannot merge: \d+ work unit\(s\) missing") as err:
        vxsim.merge(parts[:2], out, virtual=True)
    assert "\n" not in str(err.value)
    twin = str(tmp_path / "twin.h5")
    shutil.copy(parts[0], twin)
    with pytest.raises(VxsimError, match=r"^cannot merge: \d+ work unit\(s\) present twice"):
        vxsim.merge([*parts, twin], out, virtual=True)
    odd = run_shards(
        tmp_path / "odd", small_config(**{**KEYS, "network__depth": 11}), 3, "part-{i:03d}.h5"
    )
    with pytest.raises(VxsimError, match=r"has another config than .*network\.depth"):
        vxsim.merge([parts[0], *odd[1:]], out, virtual=True)
    with pytest.raises(VxsimError, match="exists; pass --overwrite"):
        vxsim.merge(parts, str(folder / "copied.h5"), virtual=True)
    assert not os.path.exists(out)


def test_materialise_refuses_a_plain_file_and_a_missing_part(few, tmp_path):
    folder, parts, copied = few
    with pytest.raises(VxsimError, match="it is a plain file already"):
        vxsim.materialise(copied, str(tmp_path / "p.h5"))
    job = tmp_path / "job"
    shutil.copytree(folder / "shards", job / "shards")
    virtual = str(job / "v.h5")
    vxsim.merge(sorted(str(p) for p in (job / "shards").iterdir()), virtual, virtual=True)
    one, two = job / "shards" / "part-001.h5", job / "shards" / "part-002.h5"
    os.rename(one, job / "x.h5")
    os.rename(two, one)
    os.rename(job / "x.h5", two)  # swapped: each maps units the other holds
    with pytest.raises(VxsimError, match=r"work unit\(s\) map to a part that does not hold"):
        vxsim.materialise(virtual, str(tmp_path / "p.h5"))
    assert summarise_file(virtual)["missing_parts"] == []
    os.remove(two)
    with pytest.raises(VxsimError, match=r"its part shards/part-002\.h5 is missing") as err:
        vxsim.materialise(virtual, str(tmp_path / "p.h5"))
    assert "\n" not in str(err.value)
    assert not os.path.exists(tmp_path / "p.h5")
    assert summarise_file(virtual)["missing_parts"] == ["shards/part-002.h5"]  # vxsim show
    assert summarise_file(copied)["missing_parts"] == []


def test_it_opens_in_xarray_as_the_copying_merge(few, tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    folder, parts, copied = few
    virtual = str(tmp_path / "v.h5")
    shutil.copytree(folder / "shards", tmp_path / "shards")
    vxsim.merge(sorted(str(p) for p in (tmp_path / "shards").iterdir()), virtual, virtual=True)
    for group in (None, "analysis"):
        with vxsim.open_results(virtual, group) as a, vxsim.open_results(copied, group) as b:
            assert sorted(a.data_vars) == sorted(b.data_vars)
            xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
            if group is None:
                assert a["log_grad_norm"].dims == b["log_grad_norm"].dims
                assert int(a.attrs["virtual"]) == 1


def test_cli_virtual_and_materialise(few, tmp_path):
    folder, parts, copied = few
    runner = CliRunner()
    job = tmp_path / "job"
    shutil.copytree(folder / "shards", job / "shards")
    mine = sorted(str(p) for p in (job / "shards").iterdir())
    virtual, plain = str(job / "v.h5"), str(tmp_path / "plain.h5")
    r = runner.invoke(main, ["merge", "--virtual", *mine, "-o", virtual])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"wrote {virtual} virtual datasets over 3 parts")
    r = runner.invoke(main, ["merge", "--materialize", virtual, "-o", plain])
    assert r.exit_code == 0, r.output
    assert_same_content(plain, copied, MAY_DIFFER)
    r = runner.invoke(main, ["show", virtual, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["status"] == "complete"
    shown = {
        p: json.loads(runner.invoke(main, ["boundary", p, "--json"]).output)
        for p in (virtual, copied)
    }
    assert shown[virtual] == shown[copied]
    for args, words in [
        (["--virtual", *mine[:2], "-o", str(tmp_path / "x.h5")], "work unit(s) missing"),
        (["--materialise", *mine[:2], "-o", str(tmp_path / "x.h5")], "takes one file"),
        (["--virtual", "--materialise", virtual, "-o", str(tmp_path / "x.h5")], "exclude"),
        (["--materialise", mine[0], "-o", str(tmp_path / "x.h5")], "plain file already"),
        (["--virtual", *mine, "-o", virtual], "exists; pass --overwrite"),
    ]:
        r = runner.invoke(main, ["merge", *args])
        assert r.exit_code == 2, (args, r.output)
        assert r.output.startswith("vxsim: error: ") and words in r.output, r.output
        assert r.output.count("\n") == 1, r.output
    assert not os.path.exists(tmp_path / "x.h5")


# --- 200 shards ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many")
    parts = run_shards(folder / "shards", TINY, 200, "part-{i:03d}.h5")
    copied = str(folder / "copied.h5")
    vxsim.merge(parts, copied)
    return folder, parts, copied


@pytest.mark.slow
def test_200_shards_virtual_equals_copy_is_small_and_materialises(many, tmp_path):
    folder, parts, copied = many
    virtual = str(folder / "virtual.h5")
    vxsim.merge(parts, virtual, virtual=True)
    assert_same_content(virtual, copied, MAY_DIFFER, storage=False)
    with h5py.File(virtual, "r") as f:
        assert len({s.file_name for s in f["log_q"].virtual_sources()}) == 200
    # no per-unit data: a few hundred bytes per mapping, against the copied per-layer data
    assert os.path.getsize(virtual) < os.path.getsize(copied) / 3
    plain = str(tmp_path / "plain.h5")
    vxsim.materialise(virtual, plain)
    assert_same_content(plain, copied, MAY_DIFFER)
    with pytest.raises(VxsimError, match=r"^cannot merge: 1 work unit\(s\) missing: .*shard"):
        vxsim.merge(parts[:137] + parts[138:], str(tmp_path / "gap.h5"), virtual=True)
    with pytest.raises(VxsimError, match=r"^cannot merge: 1 work unit\(s\) present twice"):
        twin = str(tmp_path / "twin.h5")
        shutil.copy(parts[5], twin)
        vxsim.merge([*parts, twin], str(tmp_path / "dup.h5"), virtual=True)
