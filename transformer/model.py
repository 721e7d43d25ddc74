"""§3.1 The encoder-decoder Transformer, with separate `encode` and `decode` entry points and an
autoregressive decoding cache (`init_decode_cache`, `decode_step`)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer.attention import (
  CROSS_CACHE_NAMES,
  SELF_CACHE_NAMES,
  MultiHeadAttention,
  segment_mask,
)
from transformer.attention_kernels import AttentionMask
from transformer.config import BOS_ID, PAD_ID, TransformerConfig
from transformer.layers import Embedding, FeedForward, PositionalEncoding, sublayer_connection

Array = jax.Array


def shift_right(targets: Array, segmentation: Array | None = None) -> Array:
  """Decoder inputs: targets shifted one place right, BOS first (and first in every packed pair)."""
  shifted = jnp.pad(targets, ((0, 0), (1, 0)), constant_values=BOS_ID)[:, :-1]
  if segmentation is not None:
    previous = jnp.pad(segmentation, ((0, 0), (1, 0)))[:, :-1]
    shifted = jnp.where(segmentation != previous, BOS_ID, shifted)
  return shifted


def segments_of(tokens: Array, segmentation: Array | None) -> Array:
  return (tokens != PAD_ID).astype(jnp.int32) if segmentation is None else segmentation


def final_norm(cfg: TransformerConfig, x: Array) -> Array:
  """Pre-norm stacks end with a LayerNorm; the paper's post-norm stacks already end normalised."""
  if cfg.norm_order != "pre":
    return x
  return nn.LayerNorm(epsilon=cfg.layer_norm_epsilon, dtype=cfg.jnp_dtype,
                      param_dtype=cfg.jnp_param_dtype, name="final_norm")(x)


# jax.checkpoint policies of TransformerConfig.remat_policy (config.REMAT_POLICIES).
REMAT_POLICIES = {
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def layer_stack(cfg: TransformerConfig, layer: type[nn.Module], count: int, x: Array,
                *args) -> Array:
  """Applies `count` identical layers to `x` (the other arguments are shared by every layer).

  Unrolled, the layers are children "layer_0" ... "layer_{N-1}". With `cfg.scan_layers` they are
  one `nn.scan` named "layers" whose parameters carry a leading axis of size N: XLA compiles one
  layer instead of N. `cfg.remat_policy` wraps each layer in `nn.remat` (training only).
  Call from inside a compact module.
  """
  if cfg.remat_policy != "none" and not cfg.decode:
    layer = nn.remat(layer, policy=REMAT_POLICIES[cfg.remat_policy],
                     prevent_cse=not cfg.scan_layers)
  if not cfg.scan_layers:
    for i in range(count):
      x = layer(cfg, name=f"layer_{i}")(x, *args)
    return x
  if cfg.decode:
    raise ValueError("Decoding runs unrolled layers: pass the parameters through "
                     "unrolled_params(config, params) with config.replace(scan_layers=False).")
  scanned = nn.scan(layer, variable_axes={"params": 0},
                    split_rngs={"params": True, "dropout": True},
                    in_axes=(nn.broadcast,) * len(args), length=count)
  x, _ = scanned(cfg, scanned=True, name="layers")(x, *args)
  return x


class EncoderLayer(nn.Module):
  """§3.1 Encoder layer: multi-head self-attention, then the feed-forward network."""

  config: TransformerConfig
  scanned: bool = False  # inside nn.scan: return (carry, None)

  @nn.compact
  def __call__(self, x: Array, mask: AttentionMask) -> Array:
    cfg = self.config
    attention = MultiHeadAttention(cfg, name="self_attention")
    x = sublayer_connection(cfg, x, lambda h: attention(h, h, mask), "self_attention")
    x = sublayer_connection(cfg, x, FeedForward(cfg, name="feed_forward"), "feed_forward")
    return (x, None) if self.scanned else x


class DecoderLayer(nn.Module):
  """§3.1 Decoder layer: masked self-attention, encoder-decoder attention, feed-forward.

  A decoder-only model's layers (`architecture="decoder_only"`) have no encoder-decoder
  attention: masked self-attention and feed-forward only, as GPT's.
  """

  config: TransformerConfig
  scanned: bool = False  # inside nn.scan: return (carry, None)

  @nn.compact
  def __call__(self, y: Array, encoded: Array | None, self_mask: AttentionMask | None,
               cross_mask: AttentionMask | Array | None, cache_len: int | None = None,
               cache_beams: int = 1) -> Array:
    cfg = self.config
    self_attention = MultiHeadAttention(cfg, name="self_attention")
    y = sublayer_connection(
        cfg, y, lambda h: self_attention(h, h, self_mask, cache_len, cache_beams),
        "self_attention")
    if cfg.architecture == "encoder_decoder":
      cross_attention = MultiHeadAttention(cfg, is_cross=True, name="cross_attention")
      y = sublayer_connection(cfg, y, lambda h: cross_attention(h, encoded, cross_mask),
                              "cross_attention")
    y = sublayer_connection(cfg, y, FeedForward(cfg, name="feed_forward"), "feed_forward")
    return (y, None) if self.scanned else y


class Encoder(nn.Module):
  """§3.1 Encoder: embeddings + positional encoding, then N identical layers."""

  config: TransformerConfig
  embedding: nn.Module

  @nn.compact
  def __call__(self, inputs: Array, segmentation: Array | None = None,
               positions: Array | None = None) -> Array:
    cfg = self.config.replace(decode=False)  # The encoder never caches: it runs once per source.
    segments = segments_of(inputs, segmentation)
    mask = AttentionMask(segments, segments, packed=segmentation is not None)
    x = PositionalEncoding(cfg, name="positional_encoding")(
        self.embedding(inputs), positions)
    x = layer_stack(cfg, EncoderLayer, cfg.num_encoder_layers, x, mask)
    return final_norm(cfg, x)


class Decoder(nn.Module):
  """§3.1 Decoder: N layers over the shifted targets, then the pre-softmax projection (§3.4)."""

  config: TransformerConfig
  embedding: nn.Module
  output_embedding: nn.Module | None = None

  @nn.compact
  def __call__(self, encoded: Array | None, inputs: Array | None, targets: Array,
               targets_segmentation: Array | None = None, targets_positions: Array | None = None,
               inputs_segmentation: Array | None = None, cache_len: int | None = None,
               cache_beams: int = 1) -> Array:
    cfg = self.config
    if cfg.decode:  # `targets` is the previous token; the cache holds everything else.
      decoder_inputs, self_mask, cross_mask = targets, None, None
      if inputs is not None:  # The call that creates the cache also stores the cross mask.
        query_segments = jnp.ones(targets.shape, jnp.int32)
        cross_mask = segment_mask(query_segments, segments_of(inputs, inputs_segmentation))
    else:
      decoder_inputs = shift_right(targets, targets_segmentation)
      target_segments = segments_of(targets, targets_segmentation)
      packed = targets_segmentation is not None
      self_mask = AttentionMask(target_segments, target_segments, causal=True, packed=packed)
      cross_mask = AttentionMask(target_segments, segments_of(inputs, inputs_segmentation),
                                 packed=packed)
    y = PositionalEncoding(cfg, name="positional_encoding")(
        self.embedding(decoder_inputs), targets_positions)
    if cfg.decode:
      for i in range(cfg.num_decoder_layers):
        y = DecoderLayer(cfg, name=f"layer_{i}")(y, encoded, self_mask, cross_mask, cache_len,
                                                 cache_beams)
    else:
      y = layer_stack(cfg, DecoderLayer, cfg.num_decoder_layers, y, encoded, self_mask,
                      cross_mask)
    y = final_norm(cfg, y)
    if self.output_embedding is None:
      return self.embedding.attend(y)
    return self.output_embedding.attend(y)


class Transformer(nn.Module):
  """§3 The Transformer: encoder, decoder, and (optionally shared, §3.4) embeddings.

  `__call__` returns float32 logits [batch, target_length, vocab] for teacher forcing;
  `encode` and `decode` are the two halves, so translation encodes a source once.
  """

  config: TransformerConfig

  def setup(self):
    cfg = self.config
    if cfg.share_embeddings:
      self.source_embedding = self.target_embedding = Embedding(cfg, name="shared_embedding")
      output_embedding = None
    else:
      self.source_embedding = Embedding(cfg, name="source_embedding")
      self.target_embedding = Embedding(cfg, name="target_embedding")
      output_embedding = Embedding(cfg, name="output_embedding")
    self.encoder = Encoder(cfg, self.source_embedding, name="encoder")
    self.decoder = Decoder(cfg, self.target_embedding, output_embedding, name="decoder")

  def encode(self, inputs: Array, inputs_segmentation: Array | None = None,
             inputs_positions: Array | None = None) -> Array:
    """Encoder output [batch, source_length, d_model]."""
    return self.encoder(inputs, inputs_segmentation, inputs_positions)

  def decode(self, encoded: Array | None, inputs: Array | None, targets: Array,
             targets_segmentation: Array | None = None, targets_positions: Array | None = None,
             inputs_segmentation: Array | None = None, cache_len: int | None = None,
             cache_beams: int = 1) -> Array:
    """Logits for `targets` given the encoder output (or, when decoding, for the next token)."""
    return self.decoder(encoded, inputs, targets, targets_segmentation, targets_positions,
                        inputs_segmentation, cache_len, cache_beams)

  def __call__(self, inputs: Array, targets: Array, *,
               inputs_segmentation: Array | None = None,
               targets_segmentation: Array | None = None,
               inputs_positions: Array | None = None,
               targets_positions: Array | None = None) -> Array:
    if self.config.decode:
      raise ValueError("Transformer.__call__ is for teacher forcing; with decode=True use "
                       "init_decode_cache and decode_step.")
    encoded = self.encode(inputs, inputs_segmentation, inputs_positions)
    return self.decode(encoded, inputs, targets, targets_segmentation, targets_positions,
                       inputs_segmentation)


# Batch keys (docs/architecture.md) -> Transformer.__call__ keyword arguments.
BATCH_KWARGS = {
    "inputs_segmentation": "inputs_segmentation",
    "targets_segmentation": "targets_segmentation",
    "inputs_position": "inputs_positions",
    "targets_position": "targets_positions",
}


def batch_forward(config: TransformerConfig):
  """forward(params, batch, rngs=None) -> teacher-forced logits [rows, T, V] of a batch dict
  {"inputs", "targets"[, "*_segmentation", "*_position"]} (the translation task's, the train
  step's and the benchmarks' one way to call the model on a batch)."""
  model = Transformer(config)

  def forward(params, batch: dict, rngs=None):
    kwargs = {BATCH_KWARGS[k]: v for k, v in batch.items() if k in BATCH_KWARGS}
    return model.apply({"params": params}, batch["inputs"], batch["targets"], **kwargs,
                       rngs=rngs)

  return forward


def unrolled_params(config: TransformerConfig, params: Any) -> tuple[TransformerConfig, Any]:
  """Parameters of a `scan_layers` model as the unrolled model names them ("layers" with a
  leading axis of N -> "layer_0" ... "layer_{N-1}"), and the config to match. Decoding runs the
  layers unrolled (its cache is per layer); other configs pass through unchanged."""
  if not config.scan_layers:
    return config, params
  params = dict(params)
  for stack, count in (("encoder", config.num_encoder_layers),
                       ("decoder", config.num_decoder_layers)):
    if stack not in params:  # a decoder-only model has no encoder
      continue
    tree = dict(params[stack])
    stacked = tree.pop("layers")
    for i in range(count):
      tree[f"layer_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    params[stack] = tree
  return config.replace(scan_layers=False), params


def init_decode_cache(config: TransformerConfig, params: Any, inputs: Array,
                      max_decode_len: int, beams: int = 1) -> Any:
  """Encodes `inputs` once and returns a decoding cache for up to `max_decode_len` steps.

  The cache holds, per decoder layer, the self-attention keys and values (filled one step at
  a time) and the encoder-decoder keys, values and source mask (computed here, once). Every
  leaf has the batch as its leading axis except scalar step counters.

  `beams` > 1 makes it for beam search with that many beams (decoding.beam_search with
  `per_sentence=is_sentence_cache`): the self-attention keys and values get a slot per beam,
  written in place, and a small per-beam index of slots is all that follows the beams, instead
  of gathering every layer's keys and values by parent beam at each step (1.2x faster beam 4,
  docs/performance.md). Greedy search and sampling take the default, 1.
  """
  if max_decode_len > config.max_length:
    raise ValueError(f"max_decode_len={max_decode_len} exceeds TransformerConfig.max_length="
                     f"{config.max_length}.")
  if not isinstance(beams, int) or isinstance(beams, bool) or beams < 1:
    raise ValueError(f"beams={beams!r} must be a positive integer: the beam size the cache will "
                     "be searched with (1 for greedy search).")
  config, params = unrolled_params(config, params)
  model = Transformer(config.replace(decode=True, deterministic=True))
  encoded = model.apply({"params": params}, inputs, method=Transformer.encode)
  first = jnp.full((inputs.shape[0], 1), BOS_ID, jnp.int32)
  _, variables = model.apply({"params": params}, encoded, inputs, first, cache_len=max_decode_len,
                             cache_beams=beams, method=Transformer.decode, mutable=["cache"])
  return variables["cache"]


def is_sentence_cache(path) -> bool:
  """True for the decoding cache leaves kept once per sentence in beam search (its
  `per_sentence`): the cross-attention keys, values and mask, computed from the source alone, and
  the self-attention keys and values, which a cache made with `beams` holds in one slot per beam
  (attention.MultiHeadAttention._append_to_cache). Neither is repeated nor reordered per beam."""
  last = path[-1] if path else None
  return getattr(last, "key", None) in CROSS_CACHE_NAMES + SELF_CACHE_NAMES


def decode_step(config: TransformerConfig, params: Any, cache: Any,
                tokens: Array) -> tuple[Array, Any]:
  """One decoding step: previous tokens [N, 1] -> (next-token logits [N, vocab], new cache).

  A `scan_layers` model's parameters are unstacked here; under jit (the decoding loop) the
  slices depend on nothing that changes per step, so XLA hoists them out of the loop."""
  config, params = unrolled_params(config, params)
  model = Transformer(config.replace(decode=True, deterministic=True))
  logits, variables = model.apply({"params": params, "cache": cache}, None, None, tokens,
                                  method=Transformer.decode, mutable=["cache"])
  return logits[:, -1, :], variables["cache"]
