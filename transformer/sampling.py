"""Sampling from a decoder-only language model: one compiled loop, the decoding cache, no Python
loop per token.

`sample(config, params, prompt, ...)` continues each row of `prompt` by `max_new_tokens`
tokens. While the sequence fits the model's context (`max_length` positions) every step feeds one
token through the cache (decoder_only.decode_step): prompt tokens are fed the same way, so the
prompt needs no separate pass and rows may have prompts of different lengths (each row's next
token is its own prompt's until the prompt is used up). Past the context, each new token is
predicted from the last `max_length` tokens by a full forward pass (a sliding window, as
nanoGPT's `generate` crops its context), since learned absolute positions cannot be shifted in a
cache. Both phases are `lax.while_loop`s inside one jit.

Temperature 0 is greedy search (argmax); otherwise logits / temperature, restricted to the
`top_k` most likely tokens when top_k > 0, are sampled with a key folded from `rng` and the
position, so the same seed gives the same text.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from transformer.config import TransformerConfig
from transformer.decoder_only import DecoderOnlyTransformer, decode_step, init_decode_cache
from transformer.decoding import first_argmax, top_k_by_chunks


def next_token(logits: jax.Array, rng: jax.Array, *, temperature: float, top_k: int
               ) -> jax.Array:
  """[N, V] float logits -> [N] int32 tokens: argmax at temperature 0, else a top-k sample.

  The argmax and the k-th largest logit come from decoding's `first_argmax` and
  `top_k_by_chunks`, which XLA's CPU backend runs several times faster than `jnp.argmax` and a
  `lax.top_k` over the whole vocabulary (docs/performance.md); the same tokens and thresholds."""
  if temperature == 0:
    return first_argmax(logits, jnp.max(logits, axis=-1, keepdims=True))
  logits = logits.astype(jnp.float32) / temperature
  if 0 < top_k < logits.shape[-1]:
    kth = top_k_by_chunks(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "temperature", "top_k"))
def sample(config: TransformerConfig, params: Any, prompt: jax.Array, prompt_lengths: jax.Array,
           rng: jax.Array, *, max_new_tokens: int, temperature: float = 1.0,
           top_k: int = 0) -> jax.Array:
  """Continues `prompt` int32 [N, P] (row i's prompt is its first prompt_lengths[i] >= 1 tokens)
  by `max_new_tokens` tokens: int32 [N, P + max_new_tokens]. Row i's continuation is
  [prompt_lengths[i], prompt_lengths[i] + max_new_tokens); a row with a shorter prompt than the
  widest goes on sampling after that (the caller cuts it)."""
  rows, prompt_width = prompt.shape
  total = prompt_width + max_new_tokens
  context = config.max_length
  tokens = jnp.zeros((rows, total), jnp.int32).at[:, :prompt_width].set(prompt)

  def choose(tokens, position, logits):
    """The token at `position + 1`: the prompt's while it lasts, else a new one."""
    new = next_token(logits, jax.random.fold_in(rng, position), temperature=temperature,
                     top_k=top_k)
    forced = position + 1 < prompt_lengths
    return jax.lax.dynamic_update_slice(
        tokens, jnp.where(forced, tokens[:, position + 1], new)[:, None], (0, position + 1))

  # Phase 1: one token per step through the cache, positions 0 .. min(total, context) - 2.
  cached_steps = min(total, context) - 1

  def cached_step(carry):
    tokens, cache, position = carry
    current = jax.lax.dynamic_slice(tokens, (0, position), (rows, 1))
    logits, cache = decode_step(config, params, cache, current)
    return choose(tokens, position, logits), cache, position + 1

  cache = init_decode_cache(config, params, rows, context)
  tokens, _, position = jax.lax.while_loop(
      lambda c: c[2] < cached_steps, cached_step, (tokens, cache, jnp.int32(0)))

  # Phase 2: past the context, a full forward over the last `context` tokens per new token.
  if total > context:
    model = DecoderOnlyTransformer(config.replace(decode=False, deterministic=True))

    def window_step(carry):
      tokens, position = carry
      window = jax.lax.dynamic_slice(tokens, (0, position + 1 - context), (rows, context))
      logits = model.apply({"params": params}, window)[:, -1]
      return choose(tokens, position, logits), position + 1

    tokens, _ = jax.lax.while_loop(lambda c: c[1] < total - 1, window_step, (tokens, position))
  return tokens
