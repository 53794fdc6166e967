"""The counter-based generator: Random123 known answers, normality, independence."""

import numba
import numpy as np
import pytest

from vxsim import rng

# Random123 tests/kat_vectors, philox4x32 10 rounds.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    c = [np.array([v], dtype=np.uint64) for v in ctr]
    k = [np.uint64(v) for v in key]
    out = rng.philox4x32_10(*c, *k)
    assert tuple(int(w[0]) for w in out) == expected


def test_philox_known_answers_in_numba():
    @numba.njit
    def block(c0, c1, c2, c3, k0, k1):
        return rng.philox4x32_10(c0, c1, c2, c3, k0, k1)

    for ctr, key, expected in KAT:
        out = block(*[np.uint64(v) for v in ctr], *[np.uint64(v) for v in key])
        assert tuple(int(w) for w in out) == expected


def test_log_and_trig_match_libm():
    k = np.arange(0, 2**32, 2**32 // 200_003, dtype=np.uint64)
    u = (k + 0.5) * 2.0**-32
    assert np.max(np.abs(rng.log_uniform(k) - np.log(u))) < 1e-14
    s, c = rng.sin_cos_turn(k)
    theta = 2 * np.pi * u
    assert np.max(np.abs(s - np.sin(theta))) < 2e-15
    assert np.max(np.abs(c - np.cos(theta))) < 2e-15
    edges = np.array([0, 1, 2**31, 2**32 - 1], dtype=np.uint64)
    assert np.all(np.isfinite(rng.log_uniform(edges)))


def test_normals_are_standard_normal():
    z = rng.normals(seed=7, sample=1, layer=2, stream=0, count=400_000)
    n = z.size
    # moments within 5 standard errors: var(z)=1, var(z^2)=2, var(z^4)=96
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs((z**2).mean() - 1) < 5 * np.sqrt(2 / n)
    assert abs((z**4).mean() - 3) < 5 * np.sqrt(96 / n)
    # Kolmogorov-Smirnov distance against the normal CDF
    from scipy import stats

    assert stats.kstest(z[:50_000], "norm").pvalue > 1e-3


def test_streams_are_distinct_and_uncorrelated():
    a = rng.normals(0, 0, 1, 0, 10_000)
    others = [
        rng.normals(0, 0, 2, 0, 10_000),
        rng.normals(0, 1, 1, 0, 10_000),
        rng.normals(0, 0, 1, 1, 10_000),
        rng.normals(1, 0, 1, 0, 10_000),
        rng.normals(2**32, 0, 1, 0, 10_000),  # high word of the seed matters
    ]
    for b in others:
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)


def test_prefix_property_and_matrix_layout():
    """Element k of a matrix does not depend on how many are drawn (counter-based)."""
    z_small = rng.normals(3, 4, 5, 0, 7)
    z_big = rng.normals(3, 4, 5, 0, 1000)
    assert np.array_equal(z_small, z_big[:7])
    m = rng.normal_matrix(3, 4, 5, 10)
    assert np.array_equal(m.ravel(), rng.normals(3, 4, 5, 0, 100))


def test_scalar_numba_path_is_bit_identical():
    @numba.njit
    def fill(k0, k1, sample, layer, out):
        for b in range(out.size // 4):
            w = rng.philox4x32_10(
                np.uint64(b), np.uint64(layer), np.uint64(sample), np.uint64(0), k0, k1
            )
            z0, z1 = rng.box_muller(w[0], w[1])
            z2, z3 = rng.box_muller(w[2], w[3])
            out[4 * b], out[4 * b + 1], out[4 * b + 2], out[4 * b + 3] = z0, z1, z2, z3

    out = np.empty(40_000)
    k0, k1 = rng.seed_key(12345)
    fill(k0, k1, 3, 9, out)
    ref = rng.normals(12345, 3, 9, 0, out.size)
    assert np.array_equal(out.view(np.uint64), ref.view(np.uint64))
