"""Position-wise products on 2-D rows (transformer/rows.py): the same values, and gradients that
XLA's CPU backend compiles without transposed copies of the activations."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from transformer import config as C
from transformer.layers import Embedding, FeedForward
from transformer.rows import over_rows

BATCH, LENGTH, D_MODEL, D_FF, VOCAB = 4, 6, 16, 64, 50
ROWS = BATCH * LENGTH


def entry_shapes(fn, *args) -> set[str]:
  """The float32 shapes the compiled program's entry computation holds (its buffers)."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  entry = text[text.index("\nENTRY"):]
  return set(re.findall(r"= f32\[([\d,]*)\]", entry[:entry.index("\n}")]))


def test_over_rows_restores_the_leading_dimensions():
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5))
  w = jax.random.normal(jax.random.key(1), (5, 7))
  y = over_rows(lambda rows: rows @ w, x)
  assert y.shape == (2, 3, 4, 7)
  np.testing.assert_allclose(y, jnp.einsum("abcd,df->abcf", x, w), rtol=1e-5, atol=1e-5)
  w2 = jax.random.normal(jax.random.key(2), (4, 5, 3))
  y2 = over_rows(lambda rows: jnp.einsum("nhd,hdf->nf", rows, w2), x, feature_dims=2)
  assert y2.shape == (2, 3, 3)
  np.testing.assert_allclose(y2, jnp.einsum("abhd,hdf->abf", x, w2), rtol=1e-5, atol=1e-5)


def _inputs():
  return jax.random.normal(jax.random.key(0), (BATCH, LENGTH, D_MODEL))


def test_the_feed_forward_gradient_copies_no_activations_transposed():
  """On [batch, length, d_ff] the inner layer's weight gradient contracted batch and length
  together, and XLA made its operand contiguous as a [d_ff, rows] copy (also [d_model, rows])."""
  cfg = C.tiny(d_model=D_MODEL, d_ff=D_FF, vocab_size=VOCAB, deterministic=True)
  layer, x = FeedForward(cfg), _inputs()
  params = layer.init(jax.random.key(1), x)
  grad = lambda p, x: jax.grad(lambda p: jnp.sum(layer.apply(p, x) ** 2))(p)
  shapes = entry_shapes(grad, params, x)
  assert f"{D_FF},{ROWS}" not in shapes and f"{D_MODEL},{ROWS}" not in shapes, shapes
  assert f"{ROWS},{D_FF}" in shapes  # the activations themselves, as rows


def test_the_output_projection_gradient_copies_no_logits_transposed():
  """The tied table's gradient of the logits [batch, length, V] was fed by a [V, rows] copy
  (53 MB a device in the Multi30k step)."""
  cfg = C.tiny(d_model=D_MODEL, d_ff=D_FF, vocab_size=VOCAB, deterministic=True)
  layer, x = Embedding(cfg), _inputs()
  params = layer.init(jax.random.key(1), x, method=Embedding.attend)
  loss = lambda p, x: jnp.sum(jax.nn.logsumexp(layer.apply(p, x, method=Embedding.attend), -1))
  shapes = entry_shapes(lambda p, x: jax.grad(loss)(p, x), params, x)
  assert f"{VOCAB},{ROWS}" not in shapes, shapes
  logits = layer.apply(params, x, method=Embedding.attend)
  assert logits.shape == (BATCH, LENGTH, VOCAB)

