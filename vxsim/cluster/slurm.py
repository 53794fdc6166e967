"""A sweep as Slurm jobs: one array job of shards, then a dependent merge job.

``write_job`` fills a job folder DIR with

    config.toml     a copy of the config (later edits of the user's file change nothing)
    sweep.sbatch    the array job: task I of 1..N runs ``vxsim sweep --shard auto/N``
                    into DIR/part-I.h5, with ``--resume`` when that part already exists
                    (a requeued or resubmitted task continues instead of starting over)
    merge.sbatch    ``vxsim merge DIR/part-1.h5 ... DIR/part-N.h5 -o DIR/sweep.h5``
    submit.sh       ``sbatch --parsable`` the array, then the merge with
                    ``--dependency=afterok:ARRAY``: it starts once every shard succeeded
    logs/           one log per shard (part-I.out) and merge.out
    job.json        the number of shards and the config: writing the job again into a
                    folder with parts is refused unless both are unchanged

``submit`` runs submit.sh and returns the two job ids. Every path in the scripts is
absolute, so they work from any directory. Nothing is written unless every option
is valid (``VxsimError``: one line naming the option).
"""

import json
import os
import re
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig

from .. import __version__
from .. import config as config_mod
from ..errors import VxsimError
from ..sweep import work_units

BACKENDS = config_mod.BACKENDS
# Seconds before the time limit at which Slurm asks a shard to stop (SIGTERM).
STOP_BEFORE = 120
_WORD = re.compile(r"[A-Za-z0-9_.,:@+=-]+")
_MEM = re.compile(r"[0-9]+[KMGTkmgt]?")
_GPUS = re.compile(r"(?:[A-Za-z0-9_.-]+:)?([0-9]+)")
# MINUTES[:SS[:SS]] (the first field is free: 90:00 is 90 minutes) or DAYS-HOURS[:MM[:SS]]
_TIME = re.compile(r"[0-9]+(?::[0-5]?[0-9]){0,2}|[0-9]+-(?:[01]?[0-9]|2[0-3])(?::[0-5]?[0-9]){0,2}")


def check_time(text):
    """A Slurm time limit: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, or UNLIMITED/INFINITE."""
    if text.upper() in ("UNLIMITED", "INFINITE") or _TIME.fullmatch(text):
        return text
    raise VxsimError(
        f"--time: {text!r} is not a Slurm time limit "
        "(MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED)"
    )


def check_mem(text):
    """A Slurm memory size: a whole number with an optional unit K, M, G or T (default M)."""
    if not _MEM.fullmatch(text):
        raise VxsimError(f"--mem: {text!r} is not a Slurm memory size (e.g. 4000, 16G, 500M)")
    return text


def check_gpus(text):
    """GPUs per task: COUNT or TYPE:COUNT, COUNT >= 1."""
    match = _GPUS.fullmatch(text)
    if not match or int(match.group(1)) < 1:
        raise VxsimError(f"--gpus-per-task: {text!r} is not COUNT or TYPE:COUNT with COUNT >= 1")
    return text


def _check_word(option, text):
    if not _WORD.fullmatch(text):
        raise VxsimError(f"{option}: {text!r} may hold only letters, digits and _ . , : @ + = -")
    return text


def _check_line(option, text):
    if "\n" in text or "\r" in text:
        raise VxsimError(f"{option}: must be one line, got {text!r}")
    return text


def _positive(option, value):
    if value is not None and value < 1:
        raise VxsimError(f"{option} must be >= 1, got {value}")
    return value


def _sbatch_directive(text):
    """'--constraint=a100' or '#SBATCH --constraint=a100' -> '#SBATCH --constraint=a100'."""
    _check_line("--extra-sbatch", text)
    body = text.strip()
    if body.startswith("#SBATCH"):
        body = body[len("#SBATCH") :].strip()
    if not body.startswith("-"):
        raise VxsimError(
            f"--extra-sbatch: expected an sbatch option like --constraint=X, got {text!r}"
        )
    return f"#SBATCH {body}"


def _job_path(directory):
    """The job folder as an absolute path that #SBATCH lines can hold; not created yet."""
    path = os.path.abspath(directory)
    for bad, what in (('"', "a double quote"), ("\\", "a backslash"), ("\n", "a newline")):
        if bad in path:
            raise VxsimError(f"-o: the job folder {path!r} contains {what}; choose another")
    if os.path.exists(path) and not os.path.isdir(path):
        raise VxsimError(f"-o: {path} exists and is not a folder")
    return path


def _check_reuse(path, plan):
    """Refuse a job folder that holds the parts or result of another sweep.

    Rewriting the scripts of the same sweep (same config, same number of shards;
    other resources, backend or command) is fine: its parts resume.
    """
    result = os.path.join(path, "sweep.h5")
    if os.path.exists(result):
        raise VxsimError(f"{result} exists: that sweep is merged; choose another job folder")
    parts = [n for n in os.listdir(path) if re.fullmatch(r"part-[0-9]+\.h5", n)]
    if not parts:
        return
    try:
        with open(os.path.join(path, "job.json")) as fh:
            earlier = json.load(fh)
    except (OSError, ValueError):
        earlier = None
    if earlier != plan:
        raise VxsimError(
            f"{path} holds parts of another sweep (config or number of shards differ): "
            "choose another job folder or remove its part-*.h5"
        )


def _make_directory(path):
    try:
        os.makedirs(os.path.join(path, "logs"), exist_ok=True)
    except OSError as err:
        raise VxsimError(f"-o: cannot create {path}: {err.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise VxsimError(f"-o: the job folder {path} is not writable")


def _log_pattern(directory, name):
    """DIR/logs/NAME for #SBATCH --output, where % in DIR is doubled (%% is a literal %
    to Slurm; NAME keeps its patterns, e.g. %a for the array index)."""
    return os.path.join(directory.replace("%", "%%"), "logs", name)


def source_tree():
    """The folder to put on PYTHONPATH when this vxsim is not installed (a source tree)."""
    import vxsim

    parent = os.path.dirname(os.path.dirname(os.path.abspath(vxsim.__file__)))
    installed = set(site.getsitepackages() + [site.getusersitepackages()])
    installed |= {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    installed = {os.path.realpath(d) for d in installed}
    return None if os.path.realpath(parent) in installed else parent


def vxsim_command(python=None, command=None):
    """The shell words that start vxsim in a job, and the PYTHONPATH it needs (or None).

    Default: this interpreter (``sys.executable -m vxsim``), with this vxsim's source
    tree on PYTHONPATH when it is not installed; ``python``: another interpreter;
    ``command``: a shell command used as given (``apptainer exec vx.sif vxsim``).
    """
    if python is not None and command is not None:
        raise VxsimError("--python and --vxsim-command exclude each other")
    if command is not None:
        if not _check_line("--vxsim-command", command).strip():
            raise VxsimError("--vxsim-command: empty")
        return command.strip(), None
    if python is not None:
        _check_line("--python", python)
        return f"{shlex.quote(python)} -m vxsim", source_tree()
    return f"{shlex.quote(sys.executable)} -m vxsim", source_tree()


def _common_directives(partition, account, qos, time, mem, extra):
    lines = []
    for option, value in (
        ("partition", partition),
        ("account", account),
        ("qos", qos),
        ("time", time),
        ("mem", mem),
    ):
        if value is not None:
            lines.append(f"#SBATCH --{option}={value}")
    return lines + list(extra)


def _environment(pythonpath):
    lines = []
    if pythonpath is not None:
        q = shlex.quote(pythonpath)
        lines.append(f'export PYTHONPATH={q}"${{PYTHONPATH:+:$PYTHONPATH}}"  # vxsim from source')
    return lines


def array_script(
    directory,
    shards,
    run,
    pythonpath=None,
    overrides=(),
    backend=None,
    job_name="vxsim",
    partition=None,
    gpus_per_task=None,
    cpus_per_task=None,
    mem=None,
    time=None,
    account=None,
    qos=None,
    max_parallel=None,
    extra=(),
    stop_before=STOP_BEFORE,
):
    """The text of sweep.sbatch: array task I of 1..``shards`` runs shard I into part-I.h5.

    Slurm sends SIGTERM to the batch shell ``stop_before`` seconds ahead of the time
    limit (``--signal=B:TERM@S``; on preemption it signals every process itself). The
    shell passes it on to vxsim, which stops at a safe point with its part resumable,
    and then requeues the task, which continues the part with --resume.
    """
    q = shlex.quote
    array = f"1-{shards}" + (f"%{max_parallel}" if max_parallel else "")
    log = _log_pattern(directory, "part-%a.out")
    head = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array={array}",
        "#SBATCH --ntasks=1",
        f'#SBATCH --output="{log}"',
        "#SBATCH --open-mode=append",
        "#SBATCH --requeue",
        f"#SBATCH --signal=B:TERM@{stop_before}",
    ]
    if gpus_per_task is not None:
        head.append(f"#SBATCH --gpus-per-task={gpus_per_task}")
    if cpus_per_task is not None:
        head.append(f"#SBATCH --cpus-per-task={cpus_per_task}")
    head += _common_directives(partition, account, qos, time, mem, extra)
    args = " ".join(["--backend", q(backend)] if backend else [])
    args += "".join(f" --set {q(item)}" for item in overrides)
    body = [
        f"# Written by `vxsim slurm` (vxsim {__version__}). Task I of the array runs shard I",
        f"# of {shards} of the sweep into part-I.h5; a task that is requeued or resubmitted",
        "# finds its part and continues it with --resume instead of starting over.",
        "set -euo pipefail",
        f"DIR={q(directory)}",
        *_environment(pythonpath),
        'if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then  # Numba and BLAS threads = CPUs granted',
        '    export NUMBA_NUM_THREADS="$SLURM_CPUS_PER_TASK"',
        '    export OMP_NUM_THREADS="$SLURM_CPUS_PER_TASK"',
        '    export OPENBLAS_NUM_THREADS="$SLURM_CPUS_PER_TASK"',
        "fi",
        'task="$SLURM_ARRAY_TASK_ID"',
        'part="$DIR/part-$task.h5"',
        'if [ -e "$part" ]; then set -- --resume; how=resumed; else set --; how=started; fi',
        f'echo "vxsim: shard $task/{shards} $how on $(hostname), job ${{SLURM_JOB_ID:-?}}"',
        "trap 'kill -TERM \"$pid\" 2>/dev/null || true' TERM  # on to vxsim: a safe stop",
        f'{run} sweep "$DIR/config.toml" --shard auto/{shards} -o "$part" "$@"'
        + (f" {args.strip()}" if args.strip() else "")
        + " &",
        "pid=$!",
        "while :; do  # a trapped signal ends `wait` early: wait until vxsim has exited",
        '    status=0; wait "$pid" || status=$?',
        '    kill -0 "$pid" 2>/dev/null || break',
        "done",
        'if [ "$status" = 143 ] || [ "$status" = 130 ]; then  # stopped by SIGTERM / SIGINT',
        f'    echo "vxsim: shard $task/{shards} stopped by a signal, part kept; requeueing it"',
        '    scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" || exit "$status"',
        "    exit 0",
        "fi",
        '[ "$status" = 0 ] || exit "$status"',
        f'echo "vxsim: shard $task/{shards} done"',
    ]
    return "\n".join(head + body) + "\n"


def merge_script(
    directory,
    shards,
    run,
    pythonpath=None,
    job_name="vxsim",
    partition=None,
    mem=None,
    time=None,
    account=None,
    qos=None,
    extra=(),
):
    """The text of merge.sbatch: part-1.h5 .. part-N.h5 -> sweep.h5 (submitted afterok)."""
    q = shlex.quote
    log = _log_pattern(directory, "merge.out")
    head = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}-merge",
        "#SBATCH --ntasks=1",
        f'#SBATCH --output="{log}"',
        "#SBATCH --open-mode=append",
        "#SBATCH --kill-on-invalid-dep=yes",
    ]
    head += _common_directives(partition, account, qos, time, mem, extra)
    body = [
        f"# Written by `vxsim slurm` (vxsim {__version__}). Runs once every shard of the",
        "# array job succeeded (submit.sh submits it with --dependency=afterok:ARRAY).",
        "set -euo pipefail",
        f"DIR={q(directory)}",
        *_environment(pythonpath),
        "parts=()",
        f'for i in $(seq 1 {shards}); do parts+=("$DIR/part-$i.h5"); done',
        f'echo "vxsim: merging {shards} parts on $(hostname), job ${{SLURM_JOB_ID:-?}}"',
        f'{run} merge "${{parts[@]}}" -o "$DIR/sweep.h5"',
        'echo "vxsim: merge done: $DIR/sweep.h5"',
    ]
    return "\n".join(head + body) + "\n"


def submit_script(directory, shards):
    """The text of submit.sh: the array job, then the merge job after it (afterok)."""
    return f"""#!/usr/bin/env bash
# Written by `vxsim slurm` (vxsim {__version__}). Submits the {shards} shards as one array
# job, then the merge as a job that starts once every shard has succeeded (and is
# cancelled if one fails). Run it where sbatch works: bash {shlex.quote(directory)}/submit.sh
# Running it again after a failure resubmits everything: finished shards resume as
# no-ops, unfinished ones continue where they stopped.
set -euo pipefail
DIR={shlex.quote(directory)}
array=$(sbatch --parsable "$DIR/sweep.sbatch")
array=${{array%%;*}}
if ! merge=$(sbatch --parsable --dependency="afterok:$array" "$DIR/merge.sbatch"); then
    echo "vxsim: the array job $array was submitted, the merge job was not:" >&2
    echo "  sbatch --dependency=afterok:$array $DIR/merge.sbatch" >&2
    exit 1
fi
merge=${{merge%%;*}}
printf 'array_job=%s\\nmerge_job=%s\\n' "$array" "$merge" | tee "$DIR/jobs.txt"
"""


def _write_text(path, text, mode=0o644):
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise VxsimError(f"cannot write {path}: {err.strerror}") from None


def write_job(
    directory,
    shards,
    config=None,
    overrides=(),
    backend=None,
    python=None,
    command=None,
    job_name="vxsim",
    partition=None,
    gpus_per_task=None,
    cpus_per_task=None,
    mem=None,
    time=None,
    account=None,
    qos=None,
    max_parallel=None,
    extra_sbatch=(),
    stop_before=STOP_BEFORE,
):
    """Write the job folder for a sweep of ``config`` (a TOML path; None: the default)
    in ``shards`` shards; returns {'directory', 'config', 'array', 'merge', 'submit',
    'shards', 'units'}. Everything is checked before the first file is written."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise VxsimError(f"--shards must be a whole number >= 1, got {shards!r}")
    if backend is not None and backend not in BACKENDS:
        raise VxsimError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if config is None:
        text = config_mod.default_text()
    else:
        try:
            with open(config, "rb") as fh:
                text = fh.read().decode()
        except OSError as err:
            raise VxsimError(f"cannot read config {config}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise VxsimError(f"config {config} is not UTF-8 text") from None
    for item in overrides:
        _check_line("--set", item)
    sweep = config_mod.load(text=text, overrides=overrides)
    units = len(work_units(sweep))
    if shards > units:
        raise VxsimError(
            f"--shards {shards} is more than the {units} work units (width x sample) "
            "of this config; use at most that many"
        )
    _check_word("--job-name", job_name)
    for option, value in (("--partition", partition), ("--account", account), ("--qos", qos)):
        if value is not None:
            _check_word(option, value)
    if time is not None:
        check_time(time)
    if mem is not None:
        check_mem(mem)
    if gpus_per_task is not None:
        check_gpus(str(gpus_per_task))
    _positive("--cpus-per-task", cpus_per_task)
    _positive("--max-parallel", max_parallel)
    stop_before = STOP_BEFORE if stop_before is None else _positive("--stop-before", stop_before)
    extra = [_sbatch_directive(line) for line in extra_sbatch]
    run, pythonpath = vxsim_command(python, command)
    directory = _job_path(directory)
    plan = {"shards": shards, "config": json.loads(sweep.canonical())}
    if os.path.isdir(directory):
        _check_reuse(directory, plan)

    common = dict(
        job_name=job_name,
        partition=partition,
        mem=mem,
        time=time,
        account=account,
        qos=qos,
        extra=extra,
    )
    paths = {
        "directory": directory,
        "config": os.path.join(directory, "config.toml"),
        "array": os.path.join(directory, "sweep.sbatch"),
        "merge": os.path.join(directory, "merge.sbatch"),
        "submit": os.path.join(directory, "submit.sh"),
        "result": os.path.join(directory, "sweep.h5"),
    }
    _make_directory(directory)
    _write_text(os.path.join(directory, "job.json"), json.dumps(plan, indent=1) + "\n")
    _write_text(paths["config"], text)
    _write_text(
        paths["array"],
        array_script(
            directory,
            shards,
            run,
            pythonpath,
            overrides=overrides,
            backend=backend,
            gpus_per_task=gpus_per_task,
            cpus_per_task=cpus_per_task,
            max_parallel=max_parallel,
            stop_before=stop_before,
            **common,
        ),
        0o755,
    )
    _write_text(paths["merge"], merge_script(directory, shards, run, pythonpath, **common), 0o755)
    _write_text(paths["submit"], submit_script(directory, shards), 0o755)
    return {**paths, "shards": shards, "units": units}


def submit(directory, sbatch_timeout=120):
    """Run DIR/submit.sh; returns {'array_job': id, 'merge_job': id}."""
    script = os.path.join(os.path.abspath(directory), "submit.sh")
    if not os.path.exists(script):
        raise VxsimError(f"{script} does not exist; write the job with `vxsim slurm` first")
    if shutil.which("sbatch") is None:
        raise VxsimError("sbatch is not on PATH: submit from a machine where Slurm works")
    try:
        done = subprocess.run(
            ["bash", script], capture_output=True, text=True, timeout=sbatch_timeout
        )
    except subprocess.TimeoutExpired:
        raise VxsimError(f"{script} did not finish within {sbatch_timeout} s") from None
    if done.returncode != 0:
        lines = [x for x in (done.stderr + done.stdout).strip().splitlines() if x.strip()]
        reason = "; ".join(lines[-2:]) if lines else f"exit status {done.returncode}"
        raise VxsimError(f"submitting failed: {reason}")
    ids = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    if not {"array_job", "merge_job"} <= set(ids):
        raise VxsimError(f"submit.sh printed no job ids: {done.stdout.strip()!r}")
    return {"array_job": ids["array_job"], "merge_job": ids["merge_job"]}
