"""§3.3-3.5: the position-wise feed-forward network, embeddings, positional encodings, and the
residual sub-layer connection that wraps every attention and feed-forward block."""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer.config import TransformerConfig
from transformer.dropout import Dropout
from transformer.precision import einsum_float32
from transformer.rows import over_rows

Array = jax.Array


def sinusoidal_table(max_length: int, d_model: int) -> np.ndarray:
  """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(same).

  Returns [max_length, d_model] float32."""
  position = np.arange(max_length, dtype=np.float64)[:, None]
  two_i = np.arange(0, d_model, 2, dtype=np.float64)[None, :]
  angle = position / np.power(10000.0, two_i / d_model)
  table = np.zeros((max_length, d_model), dtype=np.float64)
  table[:, 0::2] = np.sin(angle)
  table[:, 1::2] = np.cos(angle[:, : d_model // 2])
  return table.astype(np.float32)


ACTIVATION_FUNCTIONS = {"relu": nn.relu, "gelu": functools.partial(nn.gelu, approximate=True)}


class FeedForward(nn.Module):
  """§3.3 eq. (2): FFN(x) = max(0, x W1 + b1) W2 + b2, inner width d_ff (GELU instead of
  max(0, .) with `activation="gelu"`, as GPT)."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    dense = lambda features, name: nn.Dense(
        features, dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
        kernel_init=nn.initializers.xavier_uniform(), name=name)
    inner, outer = dense(cfg.d_ff, "inner"), dense(cfg.d_model, "outer")
    return over_rows(lambda rows: outer(ACTIVATION_FUNCTIONS[cfg.activation](inner(rows))), x)


class Embedding(nn.Module):
  """§3.4 learned token embeddings, multiplied by sqrt(d_model) (unless `scale_embeddings` is
  off, as in GPT).

  `attend` is the pre-softmax linear transformation with the same matrix (weight tying).
  """

  config: TransformerConfig

  def setup(self):
    cfg = self.config
    self.table = self.param(
        "embedding", nn.initializers.normal(stddev=cfg.d_model ** -0.5),
        (cfg.vocab_size, cfg.d_model), cfg.jnp_param_dtype)

  def __call__(self, tokens: Array) -> Array:
    cfg = self.config
    x = jnp.take(self.table, tokens, axis=0).astype(cfg.jnp_dtype)
    if not cfg.scale_embeddings:
      return x
    return x * jnp.sqrt(jnp.asarray(cfg.d_model, cfg.jnp_dtype))

  def attend(self, x: Array) -> Array:
    """Logits x E^T, accumulated and returned in float32, so a bfloat16 model's softmax over
    the vocabulary sees float32 logits (transformer/precision.py)."""
    table = self.table.astype(self.config.jnp_dtype)
    return over_rows(lambda rows: einsum_float32("nd,vd->nv", rows, table), x)


class PositionalEncoding(nn.Module):
  """§3.5: adds sinusoidal (the paper's) or learned position encodings, then dropout (§5.4).

  In decoding mode the position comes from a counter in the "cache" collection.
  """

  config: TransformerConfig

  @nn.compact
  def __call__(self, x: Array, positions: Array | None = None) -> Array:
    cfg = self.config
    length = x.shape[1]
    if length > cfg.max_length:
      raise ValueError(
          f"Sequence length {length} exceeds TransformerConfig.max_length={cfg.max_length}; "
          "truncate the input or build the model with a larger max_length.")
    if cfg.positional_encoding == "sinusoidal":
      table = jnp.asarray(sinusoidal_table(cfg.max_length, cfg.d_model))
    else:
      table = self.param("position_embedding", nn.initializers.normal(stddev=0.02),
                         (cfg.max_length, cfg.d_model), cfg.jnp_param_dtype)
    if cfg.decode:
      initialized = self.has_variable("cache", "position_index")
      index = self.variable("cache", "position_index", lambda: jnp.array(0, jnp.int32))
      if initialized:
        positions = jnp.broadcast_to(index.value, x.shape[:2])
        index.value = index.value + 1
    if positions is None:
      encoding = table[None, :length]
    else:
      encoding = jnp.take(table, positions, axis=0)
    x = x + encoding.astype(x.dtype)
    return Dropout(cfg.dropout_rate, cfg.dropout_random_bits)(x, deterministic=cfg.deterministic)


def sublayer_connection(config: TransformerConfig, x: Array, sublayer: Callable[[Array], Array],
                        name: str) -> Array:
  """§3.1 / §5.4 residual connection around a sub-layer, with dropout on its output.

  "post" (the paper's): LayerNorm(x + Dropout(Sublayer(x))).
  "pre": x + Dropout(Sublayer(LayerNorm(x))), with a final LayerNorm after the stack.
  Call from inside a compact module: the LayerNorm becomes a child of that module.
  """
  norm = nn.LayerNorm(epsilon=config.layer_norm_epsilon, dtype=config.jnp_dtype,
                      param_dtype=config.jnp_param_dtype, name=f"{name}_norm")
  dropout = Dropout(config.dropout_rate, config.dropout_random_bits)
  if config.norm_order == "pre":
    return x + dropout(sublayer(norm(x)), deterministic=config.deterministic)
  return norm(x + dropout(sublayer(x), deterministic=config.deterministic))
