"""§3.2 attention: masks, the two implementations, multi-head shapes, sown weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer import config as C
from transformer.attention import (
  MultiHeadAttention,
  attention_weights,
  causal_mask,
  scaled_dot_product_attention,
  segment_mask,
)


def _qkv(seed=0, batch=2, q_len=5, k_len=7, heads=3, depth=8):
  keys = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(keys[0], (batch, q_len, heads, depth)),
          jax.random.normal(keys[1], (batch, k_len, heads, depth)),
          jax.random.normal(keys[2], (batch, k_len, heads, depth)))


def test_einsum_matches_numpy_formula():
  q, k, v = _qkv()
  qn, kn, vn = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", qn, kn) / np.sqrt(qn.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  expected = np.einsum("bhqk,bkhd->bqhd", weights, vn)
  got = scaled_dot_product_attention(q, k, v, None, implementation="einsum")
  np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("with_mask", [False, True])
def test_implementations_agree(with_mask):
  q, k, v = _qkv(seed=1)
  mask = None
  if with_mask:
    segments = jnp.array([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 0]])
    mask = segment_mask(segments[:, :5], segments)
  a = scaled_dot_product_attention(q, k, v, mask, implementation="einsum")
  b = scaled_dot_product_attention(q, k, v, mask, implementation="dot_product")
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_segment_mask_keeps_pairs_and_padding_apart():
  segments = jnp.array([[1, 1, 2, 2, 2, 0]])
  mask = np.asarray(segment_mask(segments, segments))[0, 0]
  for i, si in enumerate(segments[0]):
    for j, sj in enumerate(segments[0]):
      assert mask[i, j] == (si == sj and sj != 0)


def test_causal_mask_is_lower_triangular():
  mask = np.asarray(causal_mask(4))[0, 0]
  assert (mask == np.tril(np.ones((4, 4), bool))).all()


def test_masked_keys_get_zero_weight():
  q, k, _ = _qkv(seed=2, batch=1, q_len=3, k_len=4)
  segments = jnp.array([[1, 1, 1, 0]])
  weights = attention_weights(q, k, segment_mask(segments[:, :3], segments))
  assert float(weights[..., 3].max()) == 0.0
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


def test_multi_head_attention_shapes_and_sown_weights():
  cfg = C.tiny(d_model=32, num_heads=4, deterministic=True)
  layer = MultiHeadAttention(cfg)
  x = jnp.ones((2, 5, 32))
  kv = jnp.ones((2, 7, 32))
  params = layer.init(jax.random.key(0), x, kv, None)["params"]
  assert params["query"]["kernel"].shape == (32, 4, 8)
  assert params["out"]["kernel"].shape == (4, 8, 32)
  out = layer.apply({"params": params}, x, kv, None)
  assert out.shape == (2, 5, 32)
  out2, state = layer.apply({"params": params}, x, kv, None, mutable=["intermediates"])
  (weights,) = state["intermediates"]["attention_weights"]
  assert weights.shape == (2, 4, 5, 7)
  np.testing.assert_allclose(out, out2, atol=1e-6)


@pytest.mark.parametrize("bias", [False, True])
def test_decoding_self_attention_projects_in_one_product_with_the_same_parameters(bias):
  """A decoding step's self-attention applies W^Q, W^K, W^V side by side in one product once the
  parameters exist; its output and cache must be the three separate projections' (what a call
  whose keys come from another array runs), the parameters unchanged."""
  cfg = C.tiny(d_model=32, num_heads=4, deterministic=True, attention_bias=bias, decode=True)
  layer = MultiHeadAttention(cfg)
  x = jax.random.normal(jax.random.key(1), (2, 1, 32))
  variables = layer.init(jax.random.key(0), x, x, None, cache_len=4)
  assert sorted(variables["params"]) == ["key", "out", "query", "value"]
  # Distinct values in every kernel and bias, so that a swapped projection or bias shows.
  leaves, tree = jax.tree.flatten(variables["params"])
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = tree.unflatten([jax.random.normal(k, p.shape) / 4 for k, p in zip(keys, leaves)])

  def step(kv):
    return layer.apply({"params": params, "cache": variables["cache"]}, x, kv, None,
                       cache_len=4, mutable=["cache"])

  together, separate = step(x), step(jnp.array(x))  # the latter: keys of another array
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), together, separate)
