"""Shared helpers for the test suite: small configs, the CLI, a brute-force reference network."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import vxsim
from vxsim import config as config_mod
from vxsim.engines import base


def measured(name):
    """Rows (dicts of strings) of a measured table in tests/measured/ (``#`` lines: its
    provenance)."""
    import csv

    with open(os.path.join(os.path.dirname(__file__), "measured", name)) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def small_config(**keys):
    """A Config from the default with --set style overrides given as keyword pairs.

    small_config(network__depth=20) sets network.depth = 20.
    """
    items = []
    for key, value in keys.items():
        items.append(f"{key.replace('__', '.')}={_toml(value)}")
    return config_mod.load(overrides=items)


def _toml(value):
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


def materialised_layers(config, width, sample, sigma_w2, sigma_b2):
    """W^l = sqrt(sigma_w2/N) Z^l and b^l = sqrt(sigma_b2) xi^l for l = 1..L, float64."""
    L = config.depth
    Ws = [
        np.sqrt(sigma_w2 / width) * base.weights(config, width, sample, l, np.float64)
        for l in range(1, L + 1)
    ]
    bs = [np.sqrt(sigma_b2) * base.bias(config, width, sample, l) for l in range(1, L + 1)]
    return Ws, bs


def reference_network(config, width, sample, act, param, sigma_w2, sigma_b2):
    """One network at a time with materialised W^l and b^l, float64, no renormalisation.

    Returns per layer l = 1..L: log q^l, c^l, log |J v0|^2/|v0|^2 and
    log |dE/dh^l|^2/|dE/dh^L|^2 from the explicit backward recursion.
    """
    L = config.depth
    x1, x2, v0 = base.inputs(config, width, sample)
    Ws, bs = materialised_layers(config, width, sample, sigma_w2, sigma_b2)
    h1s, h2s = [], []
    a1, a2, t = x1, x2, v0
    log_t = []
    for l in range(L):
        h1 = Ws[l] @ a1 + bs[l]
        h2 = Ws[l] @ a2 + bs[l]
        t = Ws[l] @ t
        h1s.append(h1)
        h2s.append(h2)
        log_t.append(np.log(t @ t) - np.log(v0 @ v0))
        a1, a2 = act.phi(h1, param), act.phi(h2, param)
        t = act.dphi(h1, param) * t
    log_q = np.array([np.log(np.mean(h * h)) for h in h1s])
    corr = np.array([(a @ b) / np.sqrt((a @ a) * (b @ b)) for a, b in zip(h1s, h2s, strict=True)])
    g = base.output_direction(config, width, sample)
    log_g = np.zeros(L)
    g0 = np.log(g @ g)
    for l in range(L - 1, 0, -1):  # g^{l} (0-based index l-1) from g^{l+1}
        g = act.dphi(h1s[l - 1], param) * (Ws[l].T @ g)
        log_g[l - 1] = np.log(g @ g) - g0
    return {
        "log_q": log_q,
        "corr": corr,
        "log_tangent_norm": np.array(log_t),
        "log_grad_norm": log_g,
    }


@pytest.fixture(scope="module")
def host():
    """{precision: HostBackend}: the CUDA kernels built for the CPU with CuPy's host/device
    boundary enforced (compiled once, cached); skips where no C++ compiler is found."""
    from vxsim.engines import cuda_host

    if cuda_host.compiler() is None:
        pytest.skip("no C++ compiler (g++, c++, clang++ or $CXX) on PATH")
    return {p: cuda_host.HostBackend(p, strict=True) for p in ("float32", "float64")}


@pytest.fixture
def tmp_out(tmp_path):
    return str(tmp_path / "out.h5")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Six units of about half a second each on the numpy engine (2-core CPU): a sweep
# slow enough to be killed or read while it runs.
@pytest.fixture(scope="session")
def slow_reference(tmp_path_factory):
    """The SLOW_KEYS sweep run once, uninterrupted, in a process of its own."""
    path = str(tmp_path_factory.mktemp("ref") / "ref.h5")
    p = spawn_cli("sweep", "-o", path, *SLOW_KEYS)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    return path


SLOW_KEYS = [
    "--set",
    "network.width=64",
    "--set",
    "network.depth=300",
    "--set",
    "monte_carlo.samples=6",
    "--set",
    "grid.sigma_w2=[0.8,1.5,3.0]",
    "--set",
    'measure.mode="both"',
    "--backend",
    "numpy",
    "-q",
]


def run_cli(*args, cwd=None):
    """``python -m vxsim ARGS`` in a subprocess with this source tree first on the path."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "vxsim", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def spawn_cli(*args, prelude="", extra_env=None, **kw):
    """``vxsim ARGS`` started in a new process (after the Python statements in ``prelude``);
    ``extra_env`` sets variables, or removes those it maps to None."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name, value in (extra_env or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    code = f"{prelude}\nfrom vxsim.cli import main\nmain(prog_name='vxsim')"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def units_done(path):
    """Work units flagged complete in a results file (also while it is written); 0 if none yet."""
    from vxsim.store.hdf5 import open_reader

    try:
        with open_reader(path) as f:
            return int(f["completed"][...].sum())
    except (OSError, KeyError):
        return 0


def run_shards(folder, config, count, name="part-{i}.h5"):
    """Shards 1..count of ``config`` run in this process into ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(1, count + 1):
        part = str(folder / name.format(i=i))
        vxsim.run_sweep(config, part, shard=(i, count))
        parts.append(part)
    return parts


def plain(value):
    """An HDF5 attribute or string array as plain Python (bytes decoded)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray | np.generic):
        return plain(value.tolist()) if value.dtype.kind in "OSU" else value.tolist()
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def file_content(path, may_differ=(), storage=True):
    """{name: description} of every dataset of the root and the analysis group, and the
    attributes (the root's but ``may_differ``): numeric data as raw bytes (a bitwise
    comparison, NaN payloads too), strings as text, dimension scales by name; with
    ``storage`` also the chunks and the compression filter."""
    out = {}
    with h5py.File(path, "r") as f:
        for group in (f, f["analysis"]):
            prefix = "analysis/" if group.name == "/analysis" else ""
            keep = set(may_differ) if group.name == "/" else set()
            out[prefix + "@attrs"] = {k: plain(v) for k, v in group.attrs.items() if k not in keep}
            for name, ds in group.items():
                if not isinstance(ds, h5py.Dataset):
                    continue
                values = ds[...]
                text = values.dtype.kind in "OSU"
                out[prefix + name] = {
                    "data": plain(values) if text else (values.dtype.str, values.tobytes()),
                    "shape": ds.shape,
                    "dims": [[scale.name for scale in dim.values()] for dim in ds.dims],
                    "attrs": {
                        k: plain(v)
                        for k, v in ds.attrs.items()
                        if k not in ("DIMENSION_LIST", "REFERENCE_LIST")
                    },
                    **({"chunks": ds.chunks, "compression": ds.compression} if storage else {}),
                }
    return out


def assert_same_content(a_path, b_path, may_differ=(), storage=True):
    """Two results files hold the same datasets and attributes (``file_content``)."""
    a, b = file_content(a_path, may_differ, storage), file_content(b_path, may_differ, storage)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], name


# The fast lane, `python -m pytest -m "not slow"` (README, Development), leaves out the
# tests marked slow in their files and these (a file name: all of its tests): each took
# 1.7 s or more (setup included), or about that in subprocesses per case, on 2 cores
# (2026-12-03, `--durations`): killed and resumed processes, real clusters, subprocess
# sweeps, compilers, long physics runs. The lane took 98 s then. CI runs everything.
# A test that grows slow belongs here (or gets @pytest.mark.slow).
SLOW = (
    "test_architectures.py::test_relu_power_mlp_runs_without_theory_and_numba_agrees",
    "test_architectures.py::test_residual_fits_a_power_law_and_says_so",
    "test_architectures.py::test_residual_relu_power_gradients_grow_as_a_power_of_depth",
    "test_boundary_physics.py",
    "test_cli.py::test_bad_input_is_one_line_exit_2_nothing_written",
    "test_cli.py::test_bad_toml_and_show_errors",
    "test_cli.py::test_existing_output_refused_on_cli",
    "test_cli.py::test_sweep_show_info",
    "test_cuda_first_run.py::test_cuda_engine_imports_and_runs_without_numba",
    "test_cuda_host.py::test_a_missing_barrier_is_caught",
    "test_cuda_host.py::test_cli_without_gpu_one_line_errors",
    "test_cuda_host.py::test_each_kernel_file_compiles_alone_for_ampere",
    "test_cuda_host.py::test_gpu_check_script_dry_run",
    "test_cuda_host.py::test_matches_oracle_with_threads",
    "test_cuda_host.py::test_no_fma_contraction_in_the_random_numbers",
    "test_cuda_host.py::test_whole_program_compiles_with_nvcc",
    "test_cuda_wheel.py::test_installed_engine_finds_every_kernel_source",
    "test_cuda_wheel.py::test_wheel_lists_every_kernel_source",
    "test_dask_executor.py::test_a_killed_dask_sweep_resumes_to_the_single_run",
    "test_dask_executor.py::test_an_unreachable_scheduler_is_one_line",
    "test_dask_executor.py::test_dask_on_a_local_cluster_equals_the_single_run",
    "test_dask_executor.py::test_local_cluster_has_one_worker_per_gpu_each_pinned_to_its_own",
    "test_dask_executor.py::test_results_arriving_out_of_order_still_make_the_same_file",
    "test_disk.py::test_a_disk_that_fills_mid_run_keeps_every_finished_unit",
    "test_disk.py::test_dry_run_says_units_memory_and_size_and_writes_nothing",
    "test_gates.py::test_gate_bias_on_the_wrong_architecture_is_one_line_exit_2",
    "test_gates.py::test_gate_bias_slows_gradient_decay",
    "test_gemm_rows.py::test_split_is_bit_identical_to_one_gemm",
    "test_intervals.py::test_one_sample_gives_no_interval",
    "test_numpy_engine.py::test_collapse_to_zero_is_the_fixed_point_not_a_divergence",
    "test_numpy_engine.py::test_jvp_and_vjp_agree_within_error_bars",
    "test_numpy_engine.py::test_phases",
    "test_numpy_engine.py::test_ten_thousand_layers_stay_finite",
    "test_plots.py::test_boundary_files_and_theory_curves",
    "test_plots.py::test_cli_writes_each_figure",
    "test_plots.py::test_extra_grid_axis_is_taken_by_name",
    "test_plots.py::test_phase_map_artists_scale_and_theory",
    "test_plots.py::test_vector_and_raster_outputs",
    "test_preemption.py::test_a_signal_stops_the_sweep_resumably",
    "test_progress.py::test_a_batch_log_gets_plain_lines_and_quiet_gets_nothing",
    "test_progress.py::test_json_lines_for_dashboards",
    "test_same_numbers.py::test_another_blas_kernel_is_recorded_and_never_mixed",
    "test_same_numbers.py::test_openblas_coretype_set_to_the_detected_kernel_changes_no_bit",
    "test_same_numbers.py::test_thread_variables_change_no_bit",
    "test_slurm.py::test_a_shard_stopped_by_sigterm_is_requeued_and_the_merge_is_the_same",
    "test_slurm.py::test_array_of_shards_and_dependent_merge_on_real_slurm",
    "test_slurm.py::test_bad_input_is_one_line_exit_2_nothing_written",
    "test_slurm.py::test_bad_job_folder",
    "test_slurm.py::test_cli_prints_how_to_submit",
    "test_slurm.py::test_status_of_a_job_folder",
    "test_slurm.py::test_submit_reports_a_failing_sbatch",
    "test_store_resume.py::test_a_killed_writer_leaves_marks_that_resume_clears",
    "test_store_resume.py::test_a_reader_during_a_running_sweep_sees_a_consistent_prefix",
    "test_store_resume.py::test_a_second_writer_is_refused_and_a_reader_sees_the_finished_prefix",
    "test_store_resume.py::test_sigkill_and_resume_equals_uninterrupted",
    "test_tanh_f32.py::test_at_most_one_ulp_where_tanh_is_neither_x_nor_one",
    "test_tanh_f32.py::test_exactly_one_from_9_011_to_infinity",
    "test_tanh_f32.py::test_exactly_x_below_two_to_minus_twelve",
    "test_tanh_f32.py::test_odd",
    "test_theory.py::test_against_monte_carlo",
    "test_theory_grid.py::test_grid_agrees_with_meanfield",
    "test_theory_grid.py::test_quadrature_branch_agrees_with_meanfield",
    "test_theory_grid.py::test_speed_40x40_printed",
    "test_toy_architecture.py::test_plots",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.nodeid.split("/")[-1].split("[")[0]
        if name in SLOW or name.split("::")[0] in SLOW:
            item.add_marker(pytest.mark.slow)
