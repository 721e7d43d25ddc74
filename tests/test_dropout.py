"""§5.4 dropout drawn from 16 random bits per element (transformer/dropout.py)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer import config as C
from transformer.dropout import Dropout, keep_threshold


def _apply(module, x, key, deterministic=False):
  return module.apply({}, x, deterministic, rngs={"dropout": key})


def test_32_bits_is_flax_dropout_bit_for_bit():
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 33))
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(_apply(Dropout(0.3, random_bits=32), x, key),
                                nn.Dropout(0.3).apply({}, x, False, rngs={"dropout": key}))


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_16_bits_keeps_the_quantised_probability_and_the_mean(rate):
  x = jnp.full((1000, 1000), 2.0)
  out = np.asarray(_apply(Dropout(rate), x, jax.random.PRNGKey(0)))
  keep = keep_threshold(rate) / 65536
  assert abs(keep - (1 - rate)) <= 2 ** -17
  kept = out != 0
  # a million draws: the kept fraction within 5 standard deviations of the keep probability
  assert abs(kept.mean() - keep) < 5 * np.sqrt(keep * (1 - keep) / out.size)
  np.testing.assert_array_equal(out[kept], np.float32(2.0 * 65536 / keep_threshold(rate)))
  # no structure left by the four-per-hash split: each quarter of every row keeps its share
  for quarter in range(4):
    assert abs(kept[:, quarter::4].mean() - keep) < 5 * np.sqrt(keep * (1 - keep) / (out.size / 4))


def test_bfloat16_inputs_are_scaled_without_a_rounded_scale():
  x = jax.random.uniform(jax.random.PRNGKey(2), (1000, 1000), minval=1.0, maxval=2.0)
  x = x.astype(jnp.bfloat16)
  out = _apply(Dropout(0.1), x, jax.random.PRNGKey(0))
  assert out.dtype == jnp.bfloat16
  kept = np.asarray(out != 0)
  ratio = np.asarray(out, np.float64)[kept] / np.asarray(x, np.float64)[kept]
  # each element rounded once: the ratios average the exact scale (a bfloat16 scale: 1.109375)
  assert abs(ratio.mean() - 65536 / keep_threshold(0.1)) < 2e-4


def test_16_bit_masks_follow_the_key_and_any_shape():
  x = jnp.ones((3, 5, 7))  # an odd number of elements
  a, b = (_apply(Dropout(0.5), x, jax.random.PRNGKey(k)) for k in (0, 1))
  assert a.shape == x.shape and not np.array_equal(a, b)
  np.testing.assert_array_equal(a, _apply(Dropout(0.5), x, jax.random.PRNGKey(0)))
  typed = _apply(Dropout(0.5), x, jax.random.key(0))  # a typed threefry key draws the same
  np.testing.assert_array_equal(a, typed)


def test_no_dropout_when_deterministic_or_rate_zero_and_other_prngs_fall_back():
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(_apply(Dropout(0.5), x, jax.random.PRNGKey(0), True), x)
  np.testing.assert_array_equal(_apply(Dropout(0.0), x, jax.random.PRNGKey(0)), x)
  rbg = jax.random.key(0, impl="rbg")  # not threefry: nn.Dropout's draw
  np.testing.assert_array_equal(_apply(Dropout(0.5), x, rbg),
                                nn.Dropout(0.5).apply({}, x, False, rngs={"dropout": rbg}))


def test_the_config_field_names_its_choices_and_old_models_keep_32_bits():
  with pytest.raises(ValueError, match="dropout_random_bits=8"):
    C.tiny(dropout_random_bits=8)
  assert C.TransformerConfig().dropout_random_bits == 16
  assert C.upgrade_record({"d_model": 64})["dropout_random_bits"] == 32
