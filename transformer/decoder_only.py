"""The decoder alone as a language model (GPT; Radford et al., 2018, 2019), from the same blocks.

The paper's decoder (§3.1) without its encoder-decoder attention: token embeddings plus
positions, N layers of masked self-attention and feed-forward (`model.DecoderLayer` with
`architecture="decoder_only"`), and the output projection tied to the token embedding (§3.4).
It predicts token t+1 from tokens 1..t: `__call__(tokens)` gives the logits of every next token,
so a batch of windows w trains on inputs w[:-1] and targets w[1:] (no shift inside the model).

GPT-2's choices are the defaults of `configs/shakespeare_char.py`, each a field of the same
TransformerConfig: `norm_order="pre"` (with the final LayerNorm), `positional_encoding="learned"`,
`activation="gelu"`, `scale_embeddings=False`. Decoding uses the same cache as the translation
decoder's self-attention (`init_decode_cache`, `decode_step`; sampling.py runs them).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer.attention_kernels import AttentionMask
from transformer.config import TransformerConfig
from transformer.layers import Embedding, PositionalEncoding
from transformer.model import DecoderLayer, final_norm, layer_stack, segments_of, unrolled_params

Array = jax.Array


class DecoderOnlyTransformer(nn.Module):
  """Next-token logits (float32) [batch, length, vocab] of a decoder-only Transformer.

  Training and evaluation: `tokens` [batch, length], optional `segmentation` (0 = padding) and
  `positions`. Decoding (`config.decode`): one token per call, [batch, 1]; the first call with a
  fresh "cache" collection (`cache_len` given) sizes the cache and stores nothing.
  """

  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens: Array, segmentation: Array | None = None,
               positions: Array | None = None, cache_len: int | None = None) -> Array:
    cfg = self.config
    if cfg.architecture != "decoder_only":
      raise ValueError(f"DecoderOnlyTransformer needs architecture='decoder_only', not "
                       f"{cfg.architecture!r}.")
    embedding = Embedding(cfg, name="embedding")
    mask = None
    if not cfg.decode:
      segments = segments_of(tokens, segmentation)
      mask = AttentionMask(segments, segments, causal=True, packed=segmentation is not None)
    y = PositionalEncoding(cfg, name="positional_encoding")(embedding(tokens), positions)
    if cfg.decode:
      for i in range(cfg.num_decoder_layers):
        y = DecoderLayer(cfg, name=f"layer_{i}")(y, None, None, None, cache_len)
    else:
      y = layer_stack(cfg, DecoderLayer, cfg.num_decoder_layers, y, None, mask, None)
    return embedding.attend(final_norm(cfg, y))


def batch_forward(config: TransformerConfig):
  """forward(params, batch, rngs=None) -> logits [rows, T, V] predicting batch["targets"] from
  batch["inputs"] (optionally packed: "inputs_segmentation", "inputs_position")."""
  model = DecoderOnlyTransformer(config)

  def forward(params, batch: dict, rngs=None):
    return model.apply({"params": params}, batch["inputs"], batch.get("inputs_segmentation"),
                       batch.get("inputs_position"), rngs=rngs)

  return forward


def init_decode_cache(config: TransformerConfig, params: Any, batch_size: int,
                      max_decode_len: int) -> Any:
  """An empty decoding cache for `batch_size` sequences of up to `max_decode_len` tokens:
  per layer the self-attention keys and values (filled one step at a time) and the position."""
  if max_decode_len > config.max_length:
    raise ValueError(f"max_decode_len={max_decode_len} exceeds TransformerConfig.max_length="
                     f"{config.max_length}.")
  config, params = unrolled_params(config, params)
  model = DecoderOnlyTransformer(config.replace(decode=True, deterministic=True))
  first = jnp.zeros((batch_size, 1), jnp.int32)
  _, variables = model.apply({"params": params}, first, cache_len=max_decode_len,
                             mutable=["cache"])
  return variables["cache"]


def decode_step(config: TransformerConfig, params: Any, cache: Any,
                tokens: Array) -> tuple[Array, Any]:
  """One step: the current tokens [N, 1] -> (next-token logits [N, vocab], updated cache)."""
  config, params = unrolled_params(config, params)
  model = DecoderOnlyTransformer(config.replace(decode=True, deterministic=True))
  logits, variables = model.apply({"params": params, "cache": cache}, tokens, mutable=["cache"])
  return logits[:, -1, :], variables["cache"]
