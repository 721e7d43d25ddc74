"""§3.2 Attention: scaled dot-product attention, multi-head attention, and the masks they use.

Masks are boolean arrays broadcastable to [batch, heads, query_length, key_length]; True means
"may attend". Padding and packing are both expressed as segment ids: 0 marks padding, and a
query attends to a key only when both belong to the same non-zero segment.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer import attention_kernels
from transformer.attention_kernels import AttentionCall, AttentionMask
from transformer.config import TransformerConfig
from transformer.dropout import Dropout
from transformer.precision import einsum_float32
from transformer.rows import over_rows

Array = jax.Array
# Decoding-cache variables of encoder-decoder attention: computed once from the source.
CROSS_CACHE_NAMES = ("cross_key", "cross_value", "cross_mask")
# Self-attention's keys and values: with several beams, one set of slots per sentence.
SELF_CACHE_NAMES = ("cached_key", "cached_value")


def segment_mask(query_segments: Array, key_segments: Array) -> Array:
  """Padding and packing mask: [batch, 1, q_len, k_len], True where segments match and are real.

  Unpacked rows use segment ids `tokens != PAD` (1 for tokens, 0 for padding), so this one rule
  is both the padding mask and the mask that keeps packed pairs from seeing each other.
  """
  return AttentionMask(query_segments, key_segments).dense()


def causal_mask(length: int) -> Array:
  """§3.2.3 decoder mask: position i attends to positions <= i. Shape [1, 1, length, length]."""
  return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]


def attention_weights(query: Array, key: Array, mask: AttentionMask | Array | None, *,
                      key_layout: str = "bkhd") -> Array:
  """softmax(Q K^T / sqrt(d_k)) of eq. (1), in float32. [batch, heads, q_len, k_len].

  The products Q K^T accumulate and come out in float32 whatever the compute dtype, so bfloat16
  inputs lose nothing in the logits or the softmax (transformer/precision.py). `key_layout` is
  "bkhd" ([batch, k_len, heads, d_k]) or "bhkd", the decoding cache's heads-first layout.
  """
  depth = query.shape[-1]
  logits = einsum_float32(f"bqhd,{key_layout}->bhqk", query, key)
  logits = logits / jnp.sqrt(jnp.float32(depth))
  if isinstance(mask, AttentionMask):
    mask = mask.dense()
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1)


def scaled_dot_product_attention(query: Array, key: Array, value: Array,
                                 mask: AttentionMask | Array | None, *,
                                 implementation: str = "einsum") -> Array:
  """§3.2.1, eq. (1): Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V.

  Args:
    query: [batch, q_len, heads, d_k]; key: [batch, k_len, heads, d_k]; value: [batch, k_len,
      heads, d_v]; mask: an `AttentionMask` (segments and causality), or a boolean array
      broadcastable to [batch, heads, q_len, k_len] (einsum and xla only).
    implementation: "einsum", the plain reference below, or a fused kernel of
      `attention_kernels` ("xla", "cudnn", "pallas_gpu", "splash"), run as named: the choice
      among them (and "auto") is `attention_kernels.select`'s.
  Returns:
    [batch, q_len, heads, d_v] in the dtype of `value`.
  """
  implementation = attention_kernels.ALIASES.get(implementation, implementation)
  if implementation != "einsum":
    return attention_kernels.FUSED[implementation](query, key, value, mask)
  weights = attention_weights(query, key, mask)
  return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)


class MultiHeadAttention(nn.Module):
  """§3.2.2 Multi-head attention: h parallel heads of d_k = d_model / h, concatenated, projected.

  With `config.decode`, keys and values live in the "cache" collection:
  self-attention appends one step's key and value per call; cross-attention (`is_cross=True`)
  projects the encoder output once, on the call that creates the cache, and reuses it.

  Attention weights are sown into the "intermediates" collection (as `attention_weights`,
  [batch, heads, q_len, k_len]) only when that collection is mutable, so the default path pays
  nothing for visualisation.
  """

  config: TransformerConfig
  is_cross: bool = False

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array | None, mask: Array | None,
               cache_len: int | None = None, cache_beams: int = 1) -> Array:
    cfg = self.config
    projection = functools.partial(
        nn.DenseGeneral, features=(cfg.num_heads, cfg.head_dim), dtype=cfg.jnp_dtype,
        param_dtype=cfg.jnp_param_dtype, use_bias=cfg.attention_bias,
        kernel_init=nn.initializers.xavier_uniform())
    dense = lambda name: functools.partial(over_rows, projection(name=name))  # transformer/rows.py
    from_cache = False
    if cfg.decode and self.is_cross:
      query = dense(name="query")(inputs_q)  # [batch, q_len, heads, d_k]
      key, value, mask = self._cached_cross_attention(dense, inputs_kv, mask)
      from_cache = True
    else:
      if cfg.decode and inputs_kv is inputs_q and self._has_projections():
        query, key, value = self._projections_in_one_product(inputs_q)
      else:
        query = dense(name="query")(inputs_q)
        key = dense(name="key")(inputs_kv)
        value = dense(name="value")(inputs_kv)
      if cfg.decode:
        key, value, mask, from_cache = self._append_to_cache(key, value, mask, cache_len,
                                                             cache_beams)

    if from_cache:  # a decoding step: keys and values [batch, heads, k_len, d], heads first
      out = self._attend_cache(query, key, value, mask)
    elif cfg.attention_dropout_rate > 0 and not cfg.deterministic:
      if cfg.attention_impl != "einsum":
        attention_kernels.announce(
            f"attention_dropout_rate={cfg.attention_dropout_rate} needs the attention weights: "
            f"training attention runs 'einsum', not attention_impl={cfg.attention_impl!r}.",
            warning=True)
      weights = attention_weights(query, key, mask)
      self._sow_weights(weights)
      weights = Dropout(cfg.attention_dropout_rate, cfg.dropout_random_bits)(
          weights, deterministic=False)
      out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)
    else:
      if self.is_mutable_collection("intermediates"):
        self._sow_weights(attention_weights(query, key, mask))
      out = scaled_dot_product_attention(query, key, value, mask,
                                         implementation=self._kernel(query, key, mask))
    return over_rows(nn.DenseGeneral(
        cfg.d_model, axis=(-2, -1), dtype=cfg.jnp_dtype, param_dtype=cfg.jnp_param_dtype,
        use_bias=cfg.attention_bias, kernel_init=nn.initializers.xavier_uniform(),
        name="out"), out, feature_dims=2)

  def _has_projections(self) -> bool:
    return all(self.has_variable("params", name) for name in ("query", "key", "value"))

  def _projections_in_one_product(self, x: Array) -> tuple[Array, Array, Array]:
    """W^Q, W^K and W^V of a decoding step's self-attention (§3.2.2), all three of the same
    inputs, as one product with the existing kernels side by side, [d_model, 3 x heads, d_k],
    then split: the arithmetic of the three `DenseGeneral`s in one matmul. A decoding step's
    products have few rows (32 sentences a device), and on a CPU such a product costs about what
    its call and its weights' passage do, not its rows: greedy 2-5% faster (docs/performance.md).
    The concatenation depends on nothing that changes per step, so XLA hoists it out of the
    decoding loop. Training keeps three products (no gain measured at its 2,048 rows); `init`
    too, which creates the parameters, still three ("query", "key", "value"), so checkpoints and
    ported weights are unchanged.
    """
    cfg = self.config
    params = [self.get_variable("params", name) for name in ("query", "key", "value")]
    kernel = jnp.concatenate([p["kernel"] for p in params], axis=1).astype(cfg.jnp_dtype)
    y = jnp.einsum("...d,dhk->...hk", x.astype(cfg.jnp_dtype), kernel)
    if cfg.attention_bias:
      y = y + jnp.concatenate([p["bias"] for p in params]).astype(cfg.jnp_dtype)
    return tuple(jnp.split(y, 3, axis=-2))

  def _attend_cache(self, query: Array, key: Array, value: Array, mask) -> Array:
    """Attention of one step's queries [rows, q_len, heads, d] to cached keys and values
    [batch, heads, k_len, d]. Beam search keeps the source's keys, and a beam cache's slots, once
    per sentence (rows = batch x beams, decoding.beam_search's `per_sentence`): a sentence's
    beams then attend together, as the q_len axis of one [beams, k_len] product per head, each
    to the keys its mask allows, instead of each beam reading its own copy."""
    rows, q_len, heads, depth = query.shape
    batch = key.shape[0]
    query = query.reshape(batch, rows // batch * q_len, heads, depth)  # beams of a sentence
    weights = attention_weights(query, key, mask, key_layout="bhkd")    # [batch, h, beams, k]
    if self.is_mutable_collection("intermediates"):
      self._sow_weights(weights.reshape(batch, heads, rows // batch, q_len, -1).transpose(
          0, 2, 1, 3, 4).reshape(rows, heads, q_len, -1))
    # The weights as the left operand: XLA's CPU dot then writes [batch, h, beams, d] with the
    # beams as rows; as einsum("bhqk,bhkd->bqhd") it chose [batch, h, d, beams], a product with
    # 4 columns that ran 8x slower for beam 4 (docs/performance.md, 2026-11-28, later).
    out = jax.lax.dot_general(weights.astype(value.dtype), value, (((3,), (2,)), ((0, 1), (0, 1))))
    return jnp.swapaxes(out, 1, 2).reshape(rows, q_len, heads, depth)

  def _kernel(self, query: Array, key: Array, mask) -> str:
    """The kernel for this call: `config.attention_impl` where it can serve it (see
    attention_kernels.choose_kernel); "einsum" is always the reference itself."""
    cfg = self.config
    if cfg.attention_impl == "einsum":
      return "einsum"
    structured = isinstance(mask, AttentionMask)
    call = AttentionCall(
        platform=jax.default_backend(), dtype=cfg.dtype, head_dim=query.shape[-1],
        q_len=query.shape[1], k_len=key.shape[1],
        causal=structured and mask.causal, packed=structured and mask.packed,
        dense_mask=mask is not None and not structured,
        gpu_compute_capability=attention_kernels.compute_capability(),
        devices=jax.device_count())
    return attention_kernels.select(cfg.attention_impl, call)

  def _sow_weights(self, weights: Array) -> None:
    self.sow("intermediates", "attention_weights", weights)

  def _cached_cross_attention(self, dense, inputs_kv, mask):
    """Encoder-decoder keys, values and mask: computed on the cache-creating call, then reused."""
    initialized = self.has_variable("cache", "cross_key")
    if not initialized and inputs_kv is None:
      raise ValueError("The decoding cache is empty: create it with "
                       "transformer.model.init_decode_cache(...) before decode_step(...).")
    if initialized:
      key_fn = value_fn = mask_fn = None
    else:  # stored heads first, as each step's attention reads them (no transpose per step)
      key_fn = lambda: _heads_first(dense(name="key")(inputs_kv))
      value_fn = lambda: _heads_first(dense(name="value")(inputs_kv))
      mask_fn = lambda: mask
    key = self.variable("cache", "cross_key", key_fn)
    value = self.variable("cache", "cross_value", value_fn)
    cached_mask = self.variable("cache", "cross_mask", mask_fn)
    return key.value, value.value, cached_mask.value

  def _append_to_cache(self, key, value, mask, cache_len, cache_beams):
    """Self-attention decoding: write this step's key and value at the cache index.

    The cache is [batch, heads, cache_len, d], heads first, the layout the step's attention
    reads, so no step copies it into another. With `cache_beams` K > 1 (beam search) it is
    [sentences, heads, K * cache_len, d]: K slots of cache_len positions per sentence, never
    reordered. Beam k of a sentence writes its step into slot k, and `cache_slot` [rows,
    cache_len] (a per-beam leaf, which beam search reorders with the beams) records for each
    hypothesis in which slot each of its positions lies; its query attends to those entries only.
    So a step reads the keys as a plain cache would, and no step gathers the caches by parent
    beam (docs/decoding.md). Returns (key, value, mask, from_cache)."""
    initialized = self.has_variable("cache", "cached_key")
    batch, _, heads, depth = key.shape
    if not initialized and cache_len is None:
      raise ValueError("The decoding cache is empty: create it with "
                       "transformer.model.init_decode_cache(...) before decode_step(...).")
    shape = (batch, heads, (cache_len or 0) * cache_beams, depth)
    cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, value.dtype)
    index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    slotted = cache_beams > 1 or self.has_variable("cache", "cache_slot")
    if slotted:
      slot = self.variable("cache", "cache_slot", jnp.zeros, (batch, cache_len or 0), jnp.int32)
    if not initialized:  # The call that creates the cache: plain attention, nothing stored.
      return key, value, mask, False
    if key.shape[1] != 1:
      raise ValueError(f"Cached decoding takes one token per step, got {key.shape[1]}.")
    i = index.value
    index.value = i + 1
    if not slotted:
      cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, _heads_first(key),
                                                      (0, 0, i, 0))
      cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, _heads_first(value),
                                                        (0, 0, i, 0))
      length = cached_key.value.shape[2]
      step_mask = (jnp.arange(length) <= i)[None, None, None, :]  # [1, 1, 1, cache_len]
      return cached_key.value, cached_value.value, step_mask, True
    sentences, length = cached_key.value.shape[0], slot.value.shape[1]
    beams, slots = batch // sentences, cached_key.value.shape[2] // length

    def write(cache, new):  # beam k of each sentence -> slot k, position i
      new = new.reshape(sentences, beams, heads, 1, depth).transpose(0, 2, 1, 3, 4)
      by_slot = cache.reshape(sentences, heads, slots, length, depth)
      return jax.lax.dynamic_update_slice(by_slot, new, (0, 0, 0, i, 0)).reshape(cache.shape)

    cached_key.value = write(cached_key.value, key)
    cached_value.value = write(cached_value.value, value)
    own_slot = (jnp.arange(batch, dtype=jnp.int32) % beams)[:, None]
    slot.value = jax.lax.dynamic_update_slice(slot.value, own_slot, (0, i))
    on_path = slot.value.reshape(sentences, beams, 1, length) == jnp.arange(slots)[:, None]
    step_mask = (on_path & (jnp.arange(length) <= i)).reshape(sentences, 1, beams,
                                                               slots * length)
    return cached_key.value, cached_value.value, step_mask, True


def _heads_first(x: Array) -> Array:
  """[batch, length, heads, d] -> [batch, heads, length, d]."""
  return jnp.swapaxes(x, 1, 2)
