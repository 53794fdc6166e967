"""What a Slurm job folder (``vxsim slurm``) has done so far: ``vxsim status DIR``.

Per shard I: its work units (from the config, ``shards.shard_units``), how many
are finished in part-I.h5 (its ``completed`` flags, read like ``vxsim show``
reads a running file), its state, and how often it was stopped and requeued (the
lines the array script writes to logs/part-I.out). The state is the queue's
(``squeue``: RUNNING, PENDING, ...) where Slurm is reachable, else what the
files say: done (status shard-complete), partial, not started. A shard that
is neither queued nor done is ``stopped`` (failed, cancelled, or its time ran
out without a requeue): submit.sh again continues it.

The ETA divides the units left by the rate of the units finished since the
first part was created (all shards together): a rough guide, as queue waits count.
"""

import json
import os
import re
import shutil
import subprocess
import time

import numpy as np

from .. import config as config_mod
from ..errors import VxsimError
from ..shards import shard_units
from ..store import hdf5, shardfile

REQUEUED = "stopped by a signal, part kept; requeueing it"


def _queue(array_job):
    """{task index: Slurm state} of the array's tasks in the queue; None without Slurm."""
    if not array_job or shutil.which("squeue") is None:
        return None
    try:
        r = subprocess.run(
            ["squeue", "-h", "-r", "-j", array_job, "-o", "%i %T"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return {} if "Invalid job id" in r.stderr else None
    states = {}
    for line in r.stdout.splitlines():
        match = re.fullmatch(r"\s*\d+_(\d+)\s+(\S+)\s*", line)
        if match:
            states[int(match.group(1))] = match.group(2)
    return states


def _part(path, owned):
    """(units of the shard done, sealed, created time) of a part; (0, False, None) if absent."""
    if not os.path.exists(path):
        return 0, False, None
    try:
        with hdf5.open_reader(path) as f:
            done = f["completed"][...].astype(bool)
            sealed = f.attrs.get("status") == shardfile.SEALED
            created = str(f.attrs.get("created", ""))
    except (OSError, KeyError) as err:
        raise VxsimError(f"cannot read {path}: {err}") from None
    try:
        stamp = time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        stamp = os.path.getmtime(path)
    return int(done[owned].sum()), sealed, stamp


def status(directory, now=None):
    """A dict: per shard its units, units done, state and requeues; totals and an ETA."""
    directory = os.path.abspath(directory)
    try:
        with open(os.path.join(directory, "job.json")) as fh:
            plan = json.load(fh)
        with open(os.path.join(directory, "config.toml")) as fh:
            config = config_mod.load(text=fh.read())
    except (OSError, ValueError) as err:
        raise VxsimError(f"{directory} is not a vxsim slurm job folder: {err}") from None
    count = int(plan["shards"])
    jobs = {}
    if os.path.exists(os.path.join(directory, "jobs.txt")):
        with open(os.path.join(directory, "jobs.txt")) as fh:
            jobs = dict(line.strip().split("=", 1) for line in fh if "=" in line)
    queue = _queue(jobs.get("array_job"))
    rows, starts = [], []
    for i in range(1, count + 1):
        units = shard_units(config, i, count)
        owned = np.zeros((len(config.widths), config.samples), dtype=bool)
        for wi, _, sample in units:
            owned[wi, sample] = True
        done, sealed, created = _part(os.path.join(directory, f"part-{i}.h5"), owned)
        if created is not None:
            starts.append(created)
        log = os.path.join(directory, "logs", f"part-{i}.out")
        text = open(log, errors="replace").read() if os.path.exists(log) else ""
        if sealed:
            state = "done"
        elif queue is not None and i in queue:
            state = queue[i].lower()
        elif done == 0 and not text:
            state = "not started"
        else:
            state = "stopped" if queue is not None else "partial"
        rows.append(
            {
                "shard": i,
                "units": len(units),
                "done": done,
                "state": state,
                "requeued": text.count(REQUEUED),
            }
        )
    total = sum(r["units"] for r in rows)
    finished = sum(r["done"] for r in rows)
    now = time.time() if now is None else now
    eta = None
    if starts and 0 < finished < total:
        rate = finished / max(now - min(starts), 1.0)
        eta = (total - finished) / rate
    return {
        "directory": directory,
        "shards": rows,
        "units": total,
        "units_done": finished,
        "eta_seconds": eta,
        "merged": os.path.exists(os.path.join(directory, "sweep.h5")),
        "slurm": queue is not None,
        **jobs,
    }


def format_status(s):
    """The human-readable table of ``status``."""
    lines = [f"{'shard':>5} {'units':>6} {'done':>6} {'requeued':>8}  state"]
    for r in s["shards"]:
        lines.append(
            f"{r['shard']:>5} {r['units']:>6} {r['done']:>6} {r['requeued']:>8}  {r['state']}"
        )
    states = {}
    for r in s["shards"]:
        states[r["state"]] = states.get(r["state"], 0) + 1
    eta = s["eta_seconds"]
    lines.append(
        f"{s['units_done']}/{s['units']} work units done; shards: "
        + ", ".join(f"{n} {k}" for k, n in sorted(states.items()))
        + (f"; ETA ~{eta / 60:.1f} min" if eta is not None else "")
        + ("; merged: sweep.h5" if s["merged"] else "")
        + ("" if s["slurm"] else " (Slurm not reachable: states from the files)")
    )
    return "\n".join(lines)
