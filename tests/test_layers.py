"""§3.3-3.5: feed-forward network, embeddings, positional encodings, sub-layer connection."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer import config as C
from transformer.layers import (
  Embedding,
  FeedForward,
  PositionalEncoding,
  sinusoidal_table,
  sublayer_connection,
)


def test_sinusoidal_table_is_the_papers_formula():
  d_model, max_length = 16, 50
  table = sinusoidal_table(max_length, d_model)
  for pos in range(max_length):
    for i in range(d_model // 2):
      angle = pos / 10000 ** (2 * i / d_model)
      assert math.isclose(table[pos, 2 * i], math.sin(angle), abs_tol=1e-6)
      assert math.isclose(table[pos, 2 * i + 1], math.cos(angle), abs_tol=1e-6)


def test_positional_encoding_adds_the_table_and_honours_positions():
  cfg = C.tiny(d_model=16, max_length=10, deterministic=True)
  layer = PositionalEncoding(cfg)
  x = jnp.zeros((1, 4, 16))
  out = layer.apply({}, x)
  np.testing.assert_allclose(out[0], sinusoidal_table(10, 16)[:4], atol=1e-6)
  positions = jnp.array([[0, 1, 0, 1]])  # A packed row: positions restart per pair.
  out = layer.apply({}, x, positions)
  np.testing.assert_allclose(out[0, 2], sinusoidal_table(10, 16)[0], atol=1e-6)


def test_learned_positions_have_parameters():
  cfg = C.tiny(d_model=16, max_length=10, positional_encoding="learned", deterministic=True)
  params = PositionalEncoding(cfg).init(jax.random.key(0), jnp.zeros((1, 4, 16)))["params"]
  assert params["position_embedding"].shape == (10, 16)


def test_embedding_scales_by_sqrt_d_model_and_attend_ties_weights():
  cfg = C.tiny(vocab_size=11, d_model=16)
  embed = Embedding(cfg)
  params = embed.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
  table = params["embedding"]
  out = embed.apply({"params": params}, jnp.array([[3, 5]]))
  np.testing.assert_allclose(out[0], table[jnp.array([3, 5])] * 4.0, rtol=1e-6)
  x = jnp.ones((1, 2, 16))
  logits = embed.apply({"params": params}, x, method=Embedding.attend)
  np.testing.assert_allclose(logits, x @ table.T, rtol=1e-5)


def test_feed_forward_shape_and_relu():
  cfg = C.tiny(d_model=8, d_ff=32)
  ffn = FeedForward(cfg)
  params = ffn.init(jax.random.key(0), jnp.ones((2, 3, 8)))["params"]
  assert params["inner"]["kernel"].shape == (8, 32)
  assert params["outer"]["kernel"].shape == (32, 8)
  x = jax.random.normal(jax.random.key(1), (2, 3, 8))
  hidden = jnp.maximum(x @ params["inner"]["kernel"] + params["inner"]["bias"], 0)
  expected = hidden @ params["outer"]["kernel"] + params["outer"]["bias"]
  np.testing.assert_allclose(ffn.apply({"params": params}, x), expected, atol=1e-5)


class _Wrapped(nn.Module):
  config: C.TransformerConfig

  @nn.compact
  def __call__(self, x):
    return sublayer_connection(self.config, x, lambda h: 2.0 * h, "block")


def test_sublayer_connection_post_and_pre_norm_order():
  x = jax.random.normal(jax.random.key(0), (1, 3, 8))

  def layer_norm(v):
    return (v - v.mean(-1, keepdims=True)) / jnp.sqrt(v.var(-1, keepdims=True) + 1e-6)

  post = C.tiny(d_model=8, deterministic=True)
  params = _Wrapped(post).init(jax.random.key(0), x)
  np.testing.assert_allclose(_Wrapped(post).apply(params, x), layer_norm(x + 2 * x), atol=1e-5)
  pre = post.replace(norm_order="pre")
  np.testing.assert_allclose(_Wrapped(pre).apply(params, x), x + 2 * layer_norm(x), atol=1e-5)
