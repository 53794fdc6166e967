"""``vxsim slurm``: the job scripts it writes, and a real run on a one-node Slurm cluster.

The script tests need no cluster: a stand-in ``sbatch`` and a stand-in vxsim command
record the argument vectors the scripts hand them, so quoting (paths with spaces, %
and $) is checked by running the scripts, not by reading them. The end-to-end test
submits to a real Slurm (scripts/slurm_localhost.sh starts one on this machine as
root from Debian's packages), waits for the array job of shards and the dependent
merge job, and compares the merged file with a single-process sweep of the same
config, dataset by dataset, exactly. Where Slurm cannot run it skips with the
reason; under CI (CI set) it fails instead, since CI must run it.
"""

import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from vxsim import config as config_mod
from vxsim.cluster import slurm
from vxsim.errors import VxsimError
from vxsim.shards import shard_units
from vxsim.store import hdf5
from vxsim.sweep import run_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_SCRIPT = os.path.join(ROOT, "scripts", "slurm_localhost.sh")

# 2 widths x 2 samples = 4 work units over 3 shards: an uneven split (2, 1, 1)
TINY = """\
[network]
width = [8, 12]
depth = 12
activation = ["tanh", "relu"]
[grid]
sigma_w2 = [0.8, 1.6, 2.4]
sigma_b2 = [0.0, 0.05]
[monte_carlo]
samples = 2
seed = 7
[measure]
mode = "both"
"""


def run_cli(*args, env=None, cwd=None):
    base = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "vxsim", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def directives(path):
    """The #SBATCH options of a job script, as sbatch reads them: only those before the
    first line that is neither blank nor a comment count."""
    found = []
    with open(path) as fh:
        for line in fh.read().splitlines()[1:]:
            if line.startswith("#SBATCH"):
                found.append(shlex.split(line[len("#SBATCH") :])[0])
            elif line.strip() and not line.startswith("#"):
                break
    return found


def executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# --- the scripts, without a cluster -------------------------------------------------


def test_directives_array_range_and_options(tmp_path):
    cfg = tmp_path / "my config.toml"
    cfg.write_text(TINY)
    job = slurm.write_job(
        tmp_path / "job",
        3,
        config=str(cfg),
        overrides=["network.depth=20"],
        backend="numpy",
        job_name="phase-diagram",
        partition="gpu,gpu-long",
        gpus_per_task="a100:1",
        cpus_per_task=8,
        mem="16G",
        time="1-12:00:00",
        account="proj42",
        qos="normal",
        max_parallel=2,
        extra_sbatch=["--constraint=a100", "#SBATCH --mail-type=END"],
    )
    array = directives(job["array"])
    merge = directives(job["merge"])
    for option in (
        "--job-name=phase-diagram",
        "--array=1-3%2",
        "--ntasks=1",
        "--requeue",
        "--gpus-per-task=a100:1",
        "--cpus-per-task=8",
        "--partition=gpu,gpu-long",
        "--mem=16G",
        "--time=1-12:00:00",
        "--account=proj42",
        "--qos=normal",
        "--constraint=a100",
        "--mail-type=END",
    ):
        assert option in array, (option, array)
    # the merge shares where and how long, never the GPUs or the array
    for option in ("--partition=gpu,gpu-long", "--account=proj42", "--time=1-12:00:00"):
        assert option in merge
    assert "--job-name=phase-diagram-merge" in merge and "--kill-on-invalid-dep=yes" in merge
    assert not any(o.startswith(("--array", "--gpus", "--cpus")) for o in merge), merge
    # the config is copied byte for byte; the overrides travel on the command line
    assert open(job["config"]).read() == TINY
    assert job["units"] == 4 and job["shards"] == 3


def test_defaults_need_no_options(tmp_path):
    job = slurm.write_job(tmp_path / "job", 1)
    assert directives(job["array"])[:3] == ["--job-name=vxsim", "--array=1-1", "--ntasks=1"]
    assert open(job["config"]).read() == config_mod.default_text()
    # default: this interpreter, and this source tree when vxsim is not installed
    text = open(job["array"]).read()
    assert f"{shlex.quote(sys.executable)} -m vxsim sweep" in text
    tree = slurm.source_tree()
    if tree is not None:
        assert os.path.exists(os.path.join(tree, "vxsim", "__init__.py"))
        assert f"export PYTHONPATH={shlex.quote(tree)}" in text


@pytest.mark.parametrize(
    "value",
    ["30", "0", "90:00", "2:30:00", "1-12", "1-12:30", "2-00:00:00", "UNLIMITED", "infinite"],
)
def test_time_limits_slurm_accepts(value):
    assert slurm.check_time(value) == value


WEIRD = "job dir with spaces, 100% $HOME 'quoted'"


def test_scripts_run_with_stand_ins_and_quote_paths(tmp_path):
    """submit.sh against a stand-in sbatch, then each job script under bash with a stand-in
    vxsim: every argument arrives whole, however odd the job folder's name."""
    record = tmp_path / "calls.jsonl"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    recorder = (
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(record)!r}, 'a') as fh:\n"
        "    fh.write(json.dumps({'argv': sys.argv,"
        " 'task': os.environ.get('SLURM_ARRAY_TASK_ID')}) + '\\n')\n"
    )
    executable(bindir / "fake-vxsim", recorder)
    executable(
        bindir / "sbatch",
        recorder
        + "print(100 + sum(1 for _ in open("
        + repr(str(record))
        + ")), ';cluster' if len(sys.argv) > 3 else '', sep='')\n",
    )
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")

    folder = tmp_path / WEIRD
    overrides = ['network.activation=["tanh", "leaky_relu(0.2)"]', "network.depth=5"]
    job = slurm.write_job(
        folder, 3, overrides=overrides, backend="numpy", command=str(bindir / "fake-vxsim")
    )

    r = subprocess.run(["bash", job["submit"]], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    calls = [json.loads(x) for x in record.read_text().splitlines()]
    assert [c["argv"][1:] for c in calls] == [
        ["--parsable", job["array"]],
        ["--parsable", "--dependency=afterok:101", job["merge"]],
    ]
    # the ";cluster" suffix of a federated sbatch --parsable is cut off
    assert r.stdout.split() == ["array_job=101", "merge_job=102"]
    assert (folder / "jobs.txt").read_text().split() == ["array_job=101", "merge_job=102"]
    record.unlink()

    def sweep_argv(task):
        env_task = dict(env, SLURM_ARRAY_TASK_ID=str(task), SLURM_JOB_ID="9")
        r = subprocess.run(["bash", job["array"]], env=env_task, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return json.loads(record.read_text().splitlines()[-1])["argv"][1:]

    expected = ["sweep", str(folder / "config.toml"), "--shard", "auto/3", "-o"]
    tail = ["--backend", "numpy", "--set", overrides[0], "--set", overrides[1]]
    assert sweep_argv(2) == expected + [str(folder / "part-2.h5")] + tail
    # a task whose part exists (requeued, resubmitted) continues it
    (folder / "part-2.h5").write_bytes(b"")
    assert sweep_argv(2) == expected + [str(folder / "part-2.h5"), "--resume"] + tail

    r = subprocess.run(["bash", job["merge"]], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    parts = [str(folder / f"part-{i}.h5") for i in (1, 2, 3)]
    argv = json.loads(record.read_text().splitlines()[-1])["argv"][1:]
    assert argv == ["merge", *parts, "-o", str(folder / "sweep.h5")]

    # the log paths: % doubled (a literal % to Slurm), the array index pattern kept
    logs = [o for o in directives(job["array"]) if o.startswith("--output=")]
    pattern = logs[0][len("--output=") :]
    assert pattern == str(folder).replace("%", "%%") + "/logs/part-%a.out"


def test_a_signalled_shard_stops_vxsim_and_requeues_itself(tmp_path):
    """SIGTERM to the batch shell (Slurm's --signal=B:TERM ahead of the time limit) reaches
    vxsim; vxsim's exit status 143 (stopped at a safe point) makes the task requeue itself.
    A failing vxsim is not requeued: its status fails the task."""
    record = tmp_path / "calls.jsonl"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    ready = tmp_path / "ready"
    executable(
        bindir / "fake-vxsim",
        f"#!{sys.executable}\n"
        "import json, signal, sys, time\n"
        "def stop(*_):\n"
        f"    open({str(record)!r}, 'a').write(json.dumps({{'got': 'TERM'}}) + '\\n')\n"
        "    sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "if '--fail' in sys.argv: sys.exit(1)\n"
        "time.sleep(60)\n",
    )
    executable(
        bindir / "scontrol",
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(record)!r}, 'a').write(json.dumps({{'scontrol': sys.argv[1:]}}) + '\\n')\n",
    )
    env = dict(
        os.environ,
        PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
        SLURM_ARRAY_TASK_ID="2",
        SLURM_ARRAY_JOB_ID="55",
        SLURM_JOB_ID="57",
    )
    job = slurm.write_job(tmp_path / "job", 3, command=str(bindir / "fake-vxsim"), stop_before=300)
    assert "--signal=B:TERM@300" in directives(job["array"])
    assert "--signal=B:TERM@120" in directives(slurm.write_job(tmp_path / "j2", 1)["array"])
    p = subprocess.Popen(["bash", job["array"]], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    assert "stopped by a signal, part kept; requeueing it" in out and "done" not in out
    calls = [json.loads(x) for x in record.read_text().splitlines()]
    assert calls == [{"got": "TERM"}, {"scontrol": ["requeue", "55_2"]}]

    record.unlink()
    failing = slurm.write_job(
        tmp_path / "job3", 1, command=str(bindir / "fake-vxsim"), overrides=[]
    )
    text = open(failing["array"]).read().replace(' "$@" &', ' "$@" --fail &')
    Path(failing["array"]).write_text(text)
    r = subprocess.run(["bash", failing["array"]], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and not record.exists(), r.stdout


def test_submit_reports_a_failing_sbatch(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    executable(
        bindir / "sbatch",
        "#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n",
    )
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    folder = tmp_path / "job"
    r = run_cli("slurm", "-n", "2", "-o", str(folder), "--submit", env=env)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "vxsim: error: submitting failed: sbatch: error: invalid partition specified: nope"
    )
    r = run_cli("slurm", "-n", "2", "-o", str(folder), "--submit", env={"PATH": "/nonexistent"})
    assert r.returncode == 2 and "sbatch is not on PATH" in r.stderr


def test_cli_prints_how_to_submit(tmp_path):
    folder = tmp_path / "a b"
    r = run_cli("slurm", "--shards", "4", "-o", str(folder), "--time", "30", "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["directory"] == str(folder) and job["shards"] == 4
    assert "--array=1-4" in directives(job["array"])
    r = run_cli("slurm", "--shards", "4", "-o", str(folder))
    assert r.returncode == 0
    assert f"submit: bash {shlex.quote(str(folder / 'submit.sh'))}" in r.stdout


BAD = [
    (["-n", "0"], "--shards must be a whole number >= 1, got 0"),
    (["-n", "x"], "--shards must be a whole number, got 'x'"),
    ([], "missing option --shards N"),
    (["-n", "99"], "--shards 99 is more than the 8 work units"),
    (["-n", "2", "--time", "1:75:00"], "--time: '1:75:00' is not a Slurm time limit"),
    (["-n", "2", "--time", "2h"], "--time: '2h' is not a Slurm time limit"),
    (["-n", "2", "--time", "1-24"], "--time: '1-24' is not a Slurm time limit"),
    (["-n", "2", "--mem", "4GB"], "--mem: '4GB' is not a Slurm memory size"),
    (["-n", "2", "--gpus-per-task", "0"], "--gpus-per-task: '0' is not COUNT"),
    (["-n", "2", "--cpus-per-task", "0"], "--cpus-per-task must be >= 1, got 0"),
    (["-n", "2", "--max-parallel", "-1"], "--max-parallel must be >= 1, got -1"),
    (["-n", "2", "--partition", "a b"], "--partition: 'a b' may hold only"),
    (["-n", "2", "--job-name", "x\ny"], "--job-name: 'x\\ny' may hold only"),
    (["-n", "2", "--extra-sbatch", "constraint=a"], "--extra-sbatch: expected an sbatch option"),
    (["-n", "2", "--backend", "gpu"], "--backend must be one of auto, numpy, numba, cuda"),
    (["-n", "2", "--python", "p", "--vxsim-command", "v"], "exclude each other"),
    (["-n", "2", "--set", "network.depth=0"], "network.depth must be >= 1"),
    (["missing.toml", "-n", "2"], "cannot read config missing.toml"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[b[1][:32] for b in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, message):
    folder = tmp_path / "job"
    r = run_cli("slurm", *args, "-o", str(folder), cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vxsim: error: "), r.stderr
    assert message in lines[0]
    assert not folder.exists()


def test_bad_job_folder(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("")
    r = run_cli("slurm", "-n", "2", "-o", str(afile))
    assert r.returncode == 2 and r.stderr.strip().endswith("exists and is not a folder")
    r = run_cli("slurm", "-n", "2", "-o", str(afile / "sub"))
    assert r.returncode == 2 and f"cannot create {afile / 'sub'}" in r.stderr
    r = run_cli("slurm", "-n", "2", "-o", str(tmp_path / 'a"b'))
    assert r.returncode == 2 and "contains a double quote" in r.stderr
    r = run_cli("slurm", "-n", "2")
    assert r.returncode == 2 and r.stderr.strip() == (
        "vxsim: error: missing option -o DIR (the job folder)"
    )
    with pytest.raises(VxsimError, match="--shards must be a whole number"):
        slurm.write_job(tmp_path / "j", True)


def test_rewriting_a_job_folder_with_parts(tmp_path):
    """Same sweep: the scripts may change (time, backend), the parts resume. Another
    config or number of shards would mix two sweeps' parts: refused, nothing written."""
    folder = tmp_path / "job"
    slurm.write_job(folder, 2, overrides=["network.depth=30"], time="10")
    (folder / "part-1.h5").write_bytes(b"")
    job = slurm.write_job(folder, 2, overrides=["network.depth=30"], time="20", backend="numpy")
    assert "--time=20" in directives(job["array"])
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    for kwargs in ({"overrides": ["network.depth=31"]}, {}):
        with pytest.raises(VxsimError, match="holds parts of another sweep"):
            slurm.write_job(folder, 2, **kwargs)
    with pytest.raises(VxsimError, match="holds parts of another sweep"):
        slurm.write_job(folder, 3, overrides=["network.depth=30"])
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    (folder / "sweep.h5").write_bytes(b"")
    with pytest.raises(VxsimError, match="sweep.h5 exists: that sweep is merged"):
        slurm.write_job(folder, 2, overrides=["network.depth=30"])


# --- a real Slurm cluster -------------------------------------------------------------


def _node_ready():
    if shutil.which("sinfo") is None:
        return False
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    states = r.stdout.split()
    return r.returncode == 0 and any(s in ("idle", "mixed") for s in states)


def _why_no_cluster():
    """None when a Slurm cluster takes jobs (starting one here if we can), else the reason."""
    if _node_ready():
        return None
    if os.geteuid() != 0:
        return f"Slurm is not running here and starting it needs root (uid {os.geteuid()})"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get to install it"
    try:
        r = subprocess.run(["bash", CLUSTER_SCRIPT], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return "scripts/slurm_localhost.sh did not finish within 900 s"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"scripts/slurm_localhost.sh failed: {last}"
    return None if _node_ready() else "scripts/slurm_localhost.sh ran but no node is idle"


@pytest.fixture(scope="module")
def cluster():
    reason = _why_no_cluster()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm test: {reason}")
        pytest.skip(reason)


def _wait_gone(job_ids, timeout):
    """Poll squeue until none of job_ids is queued or running; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(
            ["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        # squeue fails with "Invalid job id" once every job has left the controller
        if r.returncode == 0 and not r.stdout.strip():
            return True
        if r.returncode != 0 and "Invalid job id" in r.stderr:
            return True
        time.sleep(2)
    return False


def _job_record(job_id):
    """State and exit code from `scontrol show job` (kept MinJobAge seconds after the end)."""
    r = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30
    )
    records = []
    for line in r.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        records.append((fields.get("JobState"), fields.get("ExitCode")))
    return records


def _datasets(path):
    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[...]

        f.visititems(visit)
    return out


def test_array_of_shards_and_dependent_merge_on_real_slurm(cluster, tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    folder = tmp_path / "job dir"
    r = run_cli(
        "slurm", str(cfg), "--shards", "3", "-o", str(folder), "--backend", "numpy",
        "--time", "10", "--job-name", "vxsim-test", "--submit", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    ids = [job["array_job"], job["merge_job"]]
    finished = _wait_gone(ids, timeout=600)
    logs = {p.name: p.read_text() for p in (folder / "logs").glob("*.out")}
    if not finished:
        subprocess.run(["scancel", *ids], timeout=30)
    assert finished, f"jobs {ids} still queued after 600 s; logs: {logs}"

    for i in (1, 2, 3):
        assert f"vxsim: shard {i}/3 done" in logs.get(f"part-{i}.out", ""), logs
    assert "vxsim: merge done" in logs.get("merge.out", ""), logs
    records = _job_record(job["array_job"]) + _job_record(job["merge_job"])
    assert all(rec == ("COMPLETED", "0:0") for rec in records), records

    config = config_mod.load(str(cfg))
    reference = run_sweep(config, str(tmp_path / "single.h5"), backend="numpy")
    merged, single = _datasets(job["result"]), _datasets(reference)
    for name in [*hdf5.unit_variables(config), "completed"]:
        assert name in merged, name
    for name, values in single.items():
        assert name in merged, f"{name} missing from the merged file"
        if values.dtype.kind in "fc":
            np.testing.assert_array_equal(merged[name], values, err_msg=name)
        else:
            assert np.array_equal(merged[name], values), name


SLOW = """\
[network]
width = [64]
depth = 1500
activation = ["tanh"]
[grid]
sigma_w2 = [0.8, 1.5, 3.0]
sigma_b2 = [0.0]
[monte_carlo]
samples = 4
seed = 3
[measure]
mode = "both"
"""


def test_a_shard_stopped_by_sigterm_is_requeued_and_the_merge_is_the_same(cluster, tmp_path):
    """Preemption on the real cluster: scancel --signal=TERM to a running shard's batch
    shell; the shard stops at a safe point, requeues itself, resumes its part, and the
    merged file equals one uninterrupted run."""
    from conftest import units_done

    cfg = tmp_path / "slow.toml"
    cfg.write_text(SLOW)
    folder = tmp_path / "job"
    job = slurm.write_job(folder, 2, config=str(cfg), backend="numpy", job_name="vxsim-stop")
    ids = slurm.submit(folder)
    part = str(folder / "part-1.h5")
    deadline = time.monotonic() + 300
    while units_done(part) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert units_done(part) == 1, "shard 1 finished or never started; make SLOW slower"
    task = f"{ids['array_job']}_1"
    subprocess.run(["scancel", "--signal=TERM", "--batch", task], check=True, timeout=30)
    finished = _wait_gone([ids["array_job"], ids["merge_job"]], timeout=600)
    logs = {p.name: p.read_text() for p in (folder / "logs").glob("*.out")}
    if not finished:
        subprocess.run(["scancel", ids["array_job"], ids["merge_job"]], timeout=30)
    assert finished, logs
    log = logs["part-1.out"]
    assert "stopped by a signal, part kept; requeueing it" in log, log
    assert "shard 1/2 resumed" in log and "vxsim: shard 1/2 done" in log, log
    assert "vxsim: merge done" in logs.get("merge.out", ""), logs

    reference = run_sweep(config_mod.load(str(cfg)), str(tmp_path / "single.h5"), backend="numpy")
    merged, single = _datasets(job["result"]), _datasets(reference)
    for name, values in single.items():
        np.testing.assert_array_equal(merged[name], values, err_msg=name)


def test_status_of_a_job_folder(tmp_path, monkeypatch):
    """Shard 1 done, shard 2 stopped once (requeued) after one unit and running, shard 3
    pending: vxsim status counts units from the parts, states from squeue, requeues from
    the logs; without Slurm the states come from the files alone."""
    from vxsim.cluster import status as status_mod
    from vxsim.interrupt import Stopped

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY.replace("samples = 2", "samples = 4"))
    folder = tmp_path / "job"
    slurm.write_job(folder, 3, config=str(cfg), backend="numpy")
    (folder / "jobs.txt").write_text("array_job=55\nmerge_job=56\n")
    config = config_mod.load(str(cfg))
    run_sweep(config, str(folder / "part-1.h5"), backend="numpy", shard=(1, 3))
    real = hdf5.Writer.write_unit

    def stop_after_one(self, wi, sample, arrays):
        real(self, wi, sample, arrays)
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(hdf5.Writer, "write_unit", stop_after_one)
    with pytest.raises(Stopped):
        run_sweep(config, str(folder / "part-2.h5"), backend="numpy", shard=(2, 3))
    monkeypatch.setattr(hdf5.Writer, "write_unit", real)
    (folder / "logs" / "part-2.out").write_text(
        f"vxsim: shard 2/3 started\nvxsim: shard 2/3 {status_mod.REQUEUED}\n"
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    executable(bindir / "squeue", "#!/bin/sh\nprintf '55_2 RUNNING\\n55_3 PENDING\\n'\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    r = run_cli("status", str(folder), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    sizes = [len(shard_units(config, i, 3)) for i in (1, 2, 3)]
    assert [(x["units"], x["done"], x["state"], x["requeued"]) for x in s["shards"]] == [
        (sizes[0], sizes[0], "done", 0),
        (sizes[1], 1, "running", 1),
        (sizes[2], 0, "pending", 0),
    ]
    assert s["units"] == 8 and s["units_done"] == sizes[0] + 1
    assert s["eta_seconds"] > 0 and not s["merged"] and s["array_job"] == "55"
    text = run_cli("status", str(folder)).stdout
    assert f"{sizes[0] + 1}/8 work units done" in text and "1 running" in text

    monkeypatch.setattr(status_mod, "_queue", lambda job: None)
    states = [x["state"] for x in status_mod.status(folder)["shards"]]
    assert states == ["done", "partial", "not started"]
    r = run_cli("status", str(tmp_path))
    assert r.returncode == 2 and "is not a vxsim slurm job folder" in r.stderr
