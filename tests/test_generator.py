"""The normal generator (rng.GENERATOR): known answers, accuracy, every backend bit for
bit, statistics, and the version that files record and that resume and merge compare.

Accuracy references are independent of the transform: mpmath at 40 digits (the
known answers below were computed once with it and are written out), and libm
on an argument reduced exactly (quarter turns of a binary fraction of a turn).
"""

import math
import re

import h5py
import numba
import numpy as np
import pytest
from conftest import run_shards, small_config

import vxsim
from vxsim import executors, rng
from vxsim.engines import numba_normals
from vxsim.errors import VxsimError

# Random123 tests/kat_vectors fix Philox (test_rng.py); these fix the transform. Each
# row: (seed, sample, layer, stream, block), normals 4 block .. 4 block + 3 from
# mpmath (z = sqrt(-2 ln u_a) (cos, sin)(2 pi u_b), u = (k + 1/2) 2^-32, on the
# block's Philox words), and the exact bits this generator gives.
KNOWN = [
    (
        (0, 0, 0, 0, 0),
        ("0.99113767993038581617", "-0.92466258766553498131",
         "-0.61760895945919060634", "-0.48206858748717965954"),
        (0x3FEFB7665E244C60, 0xBFED96D5FEBB766D, 0xBFE3C373DD530085, 0xBFDEDA36346BED2E),
    ),
    (
        (2**64 - 1, 2**32 - 1, 2**32 - 1, 1, 0),
        ("-1.4921486925212390129", "0.070147387310324825319",
         "-0.26364027556935563097", "1.0855311495044908297"),
        (0xBFF7DFD74EB25DB9, 0x3FB1F52DDE65CF0C, 0xBFD0DF7B765EA4D4, 0x3FF15E55E91E93C3),
    ),
    (
        (12345, 3, 9, 0, 1000),
        ("-0.77970593048591591923", "1.0128996853017456571",
         "-0.45031524479674185703", "-0.15380281508341945691"),
        (0xBFE8F359D9FDE570, 0x3FF034D64CE7FEBA, 0xBFDCD1F70852B411, 0xBFC3AFCF8668736A),
    ),
]  # fmt: skip
# Box-Muller of extreme words: u_a at 2^-33 and 1 - 2^-33, theta next to 0, 2 pi and
# the octant edges (where the reduction reflects), (ka, kb): (z0, z1) mpmath, bits.
KNOWN_WORDS = [
    ((0, 0), ("6.7637056350018952016", "4.9473736281427185658e-9"),
     (0x401B0E08D9986A8D, 0x3E353FB1E0735E5E)),
    ((0, 2**32 - 1), ("6.7637056350018952016", "-4.9473736281427185658e-9"),
     (0x401B0E08D9986A8D, 0xBE353FB1E0735E5E)),
    ((2**32 - 1, 2**29 - 1), ("0.00001078959322699503612", "0.000010789593211210745132"),
     (0x3EE6A09E66C925ED, 0x3EE6A09E663AF9D4)),
    ((2**32 - 1, 2**29), ("0.000010789593211210745132", "0.00001078959322699503612"),
     (0x3EE6A09E663AF9D4, 0x3EE6A09E66C925ED)),
    ((2**31, 2**30 + 12345), ("-0.00002126456089723943106", "1.1774100221257027254"),
     (0xBEF64C297F750136, 0x3FF2D6ABE4303353)),
    ((1, 3 * 2**29 + 7), ("-4.6663953055480707033", "4.6663952031497609644"),
     (0xC012AA6387EE25C7, 0x4012AA63810EF53F)),
]  # fmt: skip
# Relative error allowed against the exact normal: each of log (fdlibm, < 1 ulp),
# sqrt, the angle (pi/4 rounded, one product), sin or cos (< 1 ulp) and the final
# product adds at most about an ulp (1.1e-16); 1e-15 (9 ulps) is the target
# and leaves room; measured: at most 2.3e-16 on the words below.
REL = 1e-15


def _bits(x):
    return int(np.float64(x).view(np.uint64))


@pytest.mark.parametrize("counter,want,bits", KNOWN)
def test_normals_known_answers(counter, want, bits):
    seed, sample, layer, stream, block = counter
    got = rng.normals(seed, sample, layer, stream, 4 * block + 4)[4 * block :]
    for g, w in zip(got, want, strict=True):
        assert abs(g - float(w)) <= REL * abs(float(w))
    assert tuple(_bits(g) for g in got) == bits  # this generator, exactly


@pytest.mark.parametrize("words,want,bits", KNOWN_WORDS)
def test_box_muller_known_answers_at_extreme_words(words, want, bits):
    got = rng.box_muller(np.uint64(words[0]), np.uint64(words[1]))
    for g, w in zip(got, want, strict=True):
        assert abs(g - float(w)) <= REL * abs(float(w))
    assert tuple(_bits(g) for g in got) == bits


def test_constants_are_fdlibms_bits():
    """The decimal constants in rng.py round to the bit patterns fdlibm states."""
    stated = {
        "LN2_HI": 0x3FE62E42FEE00000, "LN2_LO": 0x3DEA39EF35793C76,
        "LG1": 0x3FE5555555555593, "LG2": 0x3FD999999997FA04, "LG3": 0x3FD2492494229359,
        "LG4": 0x3FCC71C51D8E78AF, "LG5": 0x3FC7466496CB03DE, "LG6": 0x3FC39A09D078C69F,
        "LG7": 0x3FC2F112DF3E5244,
        "S1": 0xBFC5555555555549, "S2": 0x3F8111111110F8A6, "S3": 0xBF2A01A019C161D5,
        "S4": 0x3EC71DE357B1FE7D, "S5": 0xBE5AE5E68A2B9CEB, "S6": 0x3DE5D93A5ACFD57C,
        "C1": 0x3FA555555555554C, "C2": 0xBF56C16C16C15177, "C3": 0x3EFA01A019CB1590,
        "C4": 0xBE927E4F809C52AD, "C5": 0x3E21EE9EBDB4B1C4, "C6": 0xBDA8FAE9BE8838D4,
    }  # fmt: skip
    for name, bits in stated.items():
        assert _bits(getattr(rng, name)) == bits, name
    assert rng.LN2_HI + rng.LN2_LO == math.log(2)
    assert rng.QUARTER_PI_2_M29 == math.ldexp(math.pi / 4, -29)


def _words():
    """About 10^6 words spread over [0, 2^32), every octant edge and both extremes."""
    spread = np.arange(0, 2**32, 4093, dtype=np.uint64)
    edges = np.array(
        [0, 1, 2, 2**32 - 2, 2**32 - 1]
        + [o * 2**29 + d for o in range(1, 8) for d in (-2, -1, 0, 1)]
        + [int(2**e * math.sqrt(2)) + d for e in range(1, 32) for d in (-1, 0, 1)],
        dtype=np.uint64,
    )
    return np.concatenate([spread[:1_048_576], edges % 2**32])


def _reference(k):
    """log u, sin theta, cos theta for u = (k + 1/2) 2^-32, theta = 2 pi u, by libm on an
    exactly reduced argument: u - q/4 (q the nearest quarter turn) is exact in binary,
    so theta - q pi/2 carries one rounding and sin/cos keep their relative accuracy
    next to their zeros. log u for u > 1/2 as log1p of an exact -(1 - u)."""
    u = (k + 0.5) * 2.0**-32
    log_u = np.where(u > 0.5, np.log1p(-(1.0 - u)), np.log(u))
    q = np.round(4 * u)
    a = 2 * np.pi * (u - q / 4)
    s, c = np.sin(a), np.cos(a)
    quadrant = q.astype(np.int64) % 4
    sin_t = np.choose(quadrant, [s, c, -s, -c])
    cos_t = np.choose(quadrant, [c, -s, -c, s])
    return log_u, sin_t, cos_t


def test_transform_is_accurate_on_a_million_words_and_the_extremes():
    k = _words()
    log_u, sin_t, cos_t = _reference(k)
    # The reference itself is within ~2 ulps (libm < 1 ulp, one rounding of the
    # reduced angle), so REL bounds both errors together.
    assert np.max(np.abs(rng.log_uniform(k) / log_u - 1)) < REL
    s, c = rng.sin_cos_turn(k)
    assert np.max(np.abs(s / sin_t - 1)) < REL
    assert np.max(np.abs(c / cos_t - 1)) < REL
    ka, kb = k, np.roll(k, 12345)
    z0, z1 = rng.box_muller(ka, kb)
    r = np.sqrt(-2 * _reference(ka)[0])
    _, sin_b, cos_b = _reference(kb)
    assert np.max(np.abs(z0 / (r * cos_b) - 1)) < 2 * REL
    assert np.max(np.abs(z1 / (r * sin_b) - 1)) < 2 * REL


@numba.njit
def _numba_box_muller(ka, kb, out):
    for i in range(ka.size):
        out[i, 0], out[i, 1] = numba_normals._box_muller(ka[i], kb[i])


def test_numba_transform_is_bit_identical_on_a_million_words():
    k = _words()
    kb = np.roll(k, 777)
    out = np.empty((k.size, 2))
    _numba_box_muller(k, kb, out)
    z0, z1 = rng.box_muller(k, kb)
    np.testing.assert_array_equal(out[:, 0].view(np.uint64), z0.view(np.uint64))
    np.testing.assert_array_equal(out[:, 1].view(np.uint64), z1.view(np.uint64))


@pytest.mark.parametrize(
    "seed,sample,layer,stream,count",
    [(0, 0, 0, 0, 1), (7, 1, 2, 0, 1023), (2**64 - 1, 2**32 - 1, 2**32 - 1, 33, 4 * 256 + 3),
     (12345, 3, 9, 1, 1_000_003)],
)  # fmt: skip
def test_numba_generator_is_bit_identical(seed, sample, layer, stream, count):
    """The vectorised chunks (any count, partial chunks, the padding to 8 blocks)."""
    want = rng.normals(seed, sample, layer, stream, count)
    got = numba_normals.normals(seed, sample, layer, stream, count)
    np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))


def test_ten_million_normals_are_standard_normal():
    """Moments within 5 standard errors (var z = 1, var z^2 = 2, var z^3 = 15,
    var z^4 = 96) and Kolmogorov-Smirnov on 10^7 draws. The draw is fixed, so the
    test is deterministic; for a correct generator its p-value is uniform over
    seeds and p > 1e-4 fails one seed in 10^4, while a CDF error of 6e-4 anywhere
    (KS statistic sqrt(-ln(1e-4 / 2) / 2n)) is caught."""
    from scipy import stats

    n = 10_000_000
    z = numba_normals.normals(2024, 5, 17, rng.STREAM_WEIGHT, n)
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs((z**2).mean() - 1) < 5 * np.sqrt(2 / n)
    assert abs((z**3).mean()) < 5 * np.sqrt(15 / n)
    assert abs((z**4).mean() - 3) < 5 * np.sqrt(96 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-4


# ---------------------------------------------------------------- the generator's version


def _config():
    return small_config(network__width=[8, 12], network__depth=4, monte_carlo__samples=1)


def _set_generator(path, name):
    with h5py.File(path, "r+") as f:
        if name is None:
            del f.attrs["generator"]
        else:
            f.attrs["generator"] = name


def test_files_record_the_generator_and_resume_refuses_another(tmp_path):
    out = str(tmp_path / "run.h5")
    vxsim.run_sweep(_config(), out, backend="numpy")
    with h5py.File(out, "r") as f:
        assert f.attrs["generator"] == rng.GENERATOR
    _set_generator(out, None)  # a file of the first generator has no attribute
    line = f"drawn by the generator {rng.LEGACY_GENERATOR}, this vxsim draws them with"
    with pytest.raises(VxsimError, match=re.escape(line)) as err:
        vxsim.run_sweep(_config(), out, backend="numpy", resume=True)
    assert "\n" not in str(err.value)
    vxsim.run_sweep(_config(), out, backend="numpy", overwrite=True)


@pytest.mark.parametrize("virtual", [False, True])
def test_merge_refuses_parts_of_two_generators(tmp_path, virtual):
    parts = run_shards(tmp_path / "parts", _config(), 2)
    _set_generator(parts[1], None)
    with pytest.raises(
        VxsimError, match=re.escape(f"{parts[1]} was drawn by the generator")
    ) as err:
        vxsim.merge(parts, str(tmp_path / "merged.h5"), virtual=virtual)
    assert "\n" not in str(err.value) and rng.LEGACY_GENERATOR in str(err.value)
    _set_generator(parts[0], None)  # both old: they merge, and the result says so
    merged = str(tmp_path / "merged.h5")
    vxsim.merge(parts, merged, virtual=virtual)
    with h5py.File(merged, "r") as f:
        assert f.attrs["generator"] == rng.LEGACY_GENERATOR
    if virtual:
        plain = str(tmp_path / "plain.h5")
        vxsim.materialise(merged, plain)
        with h5py.File(plain, "r") as f:
            assert f.attrs["generator"] == rng.LEGACY_GENERATOR


def test_a_dask_worker_of_another_generator_is_refused(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    real = executors.run_unit

    def older(engine_name, config, unit):
        unit, arrays, (numerics, _) = real(engine_name, config, unit)
        return unit, arrays, (numerics, rng.LEGACY_GENERATOR)

    monkeypatch.setattr(executors, "run_unit", older)
    with distributed.LocalCluster(
        n_workers=1, processes=False, dashboard_address=":0", silence_logs=40
    ) as cluster:
        with pytest.raises(VxsimError, match="a Dask worker drew its weights with") as err:
            vxsim.run_sweep(
                _config(), str(tmp_path / "d.h5"), backend="numpy", executor="dask",
                scheduler=cluster.scheduler_address,
            )  # fmt: skip
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("register", ["native", None])
def test_constants_read_through_opaque_are_rngs(monkeypatch, register):
    """numba_normals reads rng's constants once per chunk through an empty inline-asm
    statement (the target's register class), or as plain values on other targets."""
    if register is None:
        monkeypatch.setattr(numba_normals, "_FP_REGISTER", None)

    @numba.njit
    def read():
        return numba_normals._constants()

    got = read()
    for field, value in zip(numba_normals.Constants._fields, got, strict=True):
        name = field.upper()
        want = getattr(rng, name) if hasattr(rng, name) else None
        if want is not None:
            assert value == want, field
    assert got.two_52_bits == 0x4330000000000000 and got.low29 == 2**29 - 1
