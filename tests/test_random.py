"""Counter-hash random numbers (mbjax.utils.random) and the closed-form bounded std."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mbjax.models.ensemble import bounded_logvar, bounded_std
from mbjax.utils.random import hash_bits, hash_normal, hash_truncated_normal, hash_uniform


def test_same_key_same_numbers_and_split_keys_differ():
    key = jax.random.PRNGKey(0)
    a, b = hash_normal(key, (1000,)), hash_normal(key, (1000,))
    np.testing.assert_array_equal(a, b)
    k1, k2 = jax.random.split(key)
    c, d = np.asarray(hash_normal(k1, (1000,))), np.asarray(hash_normal(k2, (1000,)))
    assert abs(np.corrcoef(c, d)[0, 1]) < 0.1
    # jit and vmap give the same numbers as eager calls.
    np.testing.assert_array_equal(jax.jit(hash_normal, static_argnums=1)(k1, (1000,)), c)
    keys = jax.random.split(key, 3)
    batched = jax.vmap(lambda k: hash_normal(k, (50,)))(keys)
    np.testing.assert_array_equal(batched[2], hash_normal(keys[2], (50,)))


def test_distributions_match_their_targets():
    key = jax.random.PRNGKey(1)
    n = 200_000
    u = np.asarray(hash_uniform(key, (n,)))
    assert 0.0 < u.min() and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    z = np.asarray(hash_normal(key, (n,)))
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # Neighbouring elements are uncorrelated (a counter hash must not leak the index).
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.01
    t = np.asarray(hash_truncated_normal(key, -2.0, 2.0, (n,)))
    assert t.min() >= -2.0 and t.max() <= 2.0
    assert stats.kstest(t, stats.truncnorm(-2.0, 2.0).cdf).pvalue > 1e-3
    bits = np.asarray(hash_bits(key, (n,)))
    assert bits.dtype == np.uint32
    ones = np.unpackbits(bits.view(np.uint8)).mean()
    assert abs(ones - 0.5) < 0.002


def test_too_many_numbers_is_a_clear_error():
    with pytest.raises(ValueError, match="2\\^32"):
        jax.eval_shape(lambda k: hash_bits(k, (1 << 16, 1 << 16)), jax.random.PRNGKey(0))


def test_bounded_std_equals_exp_half_bounded_logvar():
    raw = jnp.linspace(-150.0, 80.0, 5 * 40 * 3).reshape(5, 40, 3)
    max_lv = 0.5 + jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    min_lv = -10.0 + jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    ref = jnp.exp(0.5 * bounded_logvar(raw, max_lv, min_lv))
    np.testing.assert_allclose(bounded_std(raw, max_lv, min_lv), ref, rtol=1e-5)
