"""Model configuration: one frozen dataclass, the paper's presets, and the special token ids.

`TransformerConfig` is passed whole to every module. Training, evaluation and decoding use
`.replace(...)` copies of one config (`deterministic=True`, `decode=True`), so one set of
modules serves all three (the habit of Flax's WMT example).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

# Special token ids, the one place they are defined. The tokenizer (SentencePiece) is trained
# with exactly these ids, the model masks `PAD_ID`, and decoding starts from `BOS_ID` and stops
# at `EOS_ID`. Sequences in a batch carry no BOS: the decoder shifts targets right itself.
PAD_ID = 0
EOS_ID = 1
BOS_ID = 2
UNK_ID = 3

NORM_ORDERS = ("post", "pre")
POSITIONAL_ENCODINGS = ("sinusoidal", "learned")
ATTENTION_IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn", "pallas_gpu", "splash",
                             "dot_product")
# Rematerialisation (gradient checkpointing) of each layer in the backward pass: "none" keeps
# every activation; "dots" keeps the outputs of the matmuls without batch dimensions (the
# projections and the feed-forward network) and recomputes the rest, attention scores included;
# "full" keeps only each layer's input.
REMAT_POLICIES = ("none", "dots", "full")
# "encoder_decoder": the paper's Transformer (transformer/model.py); "decoder_only": the decoder
# stack alone, without cross-attention, as a language model (GPT; transformer/decoder_only.py).
ARCHITECTURES = ("encoder_decoder", "decoder_only")
ACTIVATIONS = ("relu", "gelu")  # of the feed-forward network: the paper's ReLU, GPT's GELU
# What models saved before a field existed had (workdirs and checkpoints lacking the field).
VALUES_BEFORE_FIELDS_EXISTED = {"attention_bias": True, "scan_layers": False,
                                "architecture": "encoder_decoder", "activation": "relu",
                                "scale_embeddings": True, "dropout_random_bits": 32}
# Fields saved under an older name: {old: new}.
RENAMED_FIELDS = {"max_len": "max_length"}
RANDOM_BITS = (16, 32)  # per element of a dropout mask (transformer/dropout.py)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key, the value and the fix."""


def upgrade_record(record: dict) -> dict:
  """A saved model record (a checkpoint's `model` item, config.json's "model") in today's field
  names, with the values models had before later fields existed."""
  record = {RENAMED_FIELDS.get(k, k): v for k, v in record.items()}
  return {**VALUES_BEFORE_FIELDS_EXISTED, **record}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyper-parameters of the Transformer (§3, Table 3), and of its decoder used alone.

  Attributes:
    architecture: "encoder_decoder" (the paper's) or "decoder_only" (a language model: the
      decoder's masked self-attention and feed-forward layers, no cross-attention, GPT's form).
    vocab_size: size of the (shared) vocabulary.
    d_model: width of every sub-layer output and of the embeddings (§3.1).
    d_ff: inner width of the position-wise feed-forward network (§3.3).
    num_heads: attention heads h; d_k = d_v = d_model / h (§3.2.2).
    num_encoder_layers, num_decoder_layers: N in the paper (6 each); a decoder-only model has
      no encoder and must set num_encoder_layers=0.
    activation: of the feed-forward network's inner layer: "relu" (§3.3, eq. 2) or "gelu"
      (GPT's; the tanh approximation, as GPT-2).
    dropout_rate: P_drop, applied to each sub-layer output and to the sums of embeddings and
      positional encodings (§5.4).
    attention_dropout_rate: dropout on the attention weights (not in the paper; 0 by default).
    dropout_random_bits: random bits per dropped-or-kept element: 16 (four elements per
      threefry hash, the keep probability a multiple of 2^-16; transformer/dropout.py) or 32
      (flax's nn.Dropout, one hash per element; what models saved before the field had).
    share_embeddings: one matrix for source embedding, target embedding and pre-softmax
      projection (§3.4, the paper's EN-DE setup with a shared vocabulary).
    scale_embeddings: multiply the embeddings by sqrt(d_model) (§3.4; GPT does not).
    max_length: the longest sequence the model accepts (and the size of the positional table).
    positional_encoding: "sinusoidal" (§3.5, the paper's) or "learned".
    norm_order: "post" (`LayerNorm(x + Dropout(Sublayer(x)))`, the paper's) or "pre".
    attention_impl: "einsum" (a plain reference), a fused kernel ("xla", "cudnn", "pallas_gpu",
      "splash"; see transformer/attention_kernels.py) or "auto", the fastest kernel that serves
      each call on the platform at hand. "dot_product" is the old name of "xla".
    attention_bias: bias vectors in the attention projections. The paper's W^Q, W^K, W^V, W^O
      have none (§3.2.2), so False; True restores this project's first versions.
    scan_layers: run the N identical layers of each stack as one `nn.scan` (parameters stacked
      on a leading axis): compile time no longer grows with depth. Same function as unrolled.
    remat_policy: rematerialisation of each layer in the backward pass: "none", "dots" or
      "full" (see REMAT_POLICIES); trades compute for activation memory.
    dtype: computation dtype name ("float32", "bfloat16"); parameters stay in `param_dtype`.
    param_dtype: parameter dtype name.
    layer_norm_epsilon: epsilon of every LayerNorm.
    deterministic: disable dropout (evaluation and decoding).
    decode: autoregressive mode: the decoder takes one token per call and keeps a cache.
  """

  architecture: str = "encoder_decoder"
  vocab_size: int = 32000
  d_model: int = 512
  d_ff: int = 2048
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  activation: str = "relu"
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  dropout_random_bits: int = 16
  share_embeddings: bool = True
  scale_embeddings: bool = True
  max_length: int = 256
  positional_encoding: str = "sinusoidal"
  norm_order: str = "post"
  attention_impl: str = "einsum"
  attention_bias: bool = False
  scan_layers: bool = False
  remat_policy: str = "none"
  dtype: str = "float32"
  param_dtype: str = "float32"
  layer_norm_epsilon: float = 1e-6
  deterministic: bool = False
  decode: bool = False

  def __post_init__(self):
    self.validate()

  def replace(self, **changes: Any) -> "TransformerConfig":
    return dataclasses.replace(self, **changes)

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def jnp_dtype(self):
    """`dtype` as a jax dtype: what the layers compute in."""
    return DTYPES[self.dtype]

  @property
  def jnp_param_dtype(self):
    """`param_dtype` as a jax dtype: what the parameters are stored in."""
    return DTYPES[self.param_dtype]

  def validate(self) -> None:
    """Raises ValueError naming the field, its value and what is allowed."""
    for name in ("vocab_size", "d_model", "d_ff", "num_heads", "max_length"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"TransformerConfig.{name}={value!r} must be a positive integer.")
    for name in ("num_encoder_layers", "num_decoder_layers"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"TransformerConfig.{name}={value!r} must be a non-negative integer.")
    if self.d_model % self.num_heads:
      raise ValueError(
          f"TransformerConfig.d_model={self.d_model} is not divisible by "
          f"num_heads={self.num_heads}; choose num_heads among the divisors of d_model.")
    for name in ("dropout_rate", "attention_dropout_rate"):
      value = getattr(self, name)
      if not 0.0 <= value < 1.0:
        raise ValueError(f"TransformerConfig.{name}={value!r} must be in [0, 1).")
    if self.architecture == "decoder_only" and self.num_encoder_layers:
      raise ValueError(
          f"TransformerConfig.num_encoder_layers={self.num_encoder_layers} with "
          "architecture='decoder_only': a decoder-only model has no encoder; set it to 0.")
    choices = {
        "architecture": ARCHITECTURES,
        "activation": ACTIVATIONS,
        "norm_order": NORM_ORDERS,
        "positional_encoding": POSITIONAL_ENCODINGS,
        "attention_impl": ATTENTION_IMPLEMENTATIONS,
        "remat_policy": REMAT_POLICIES,
        "dtype": tuple(DTYPES),
        "param_dtype": tuple(DTYPES),
        "dropout_random_bits": RANDOM_BITS,
    }
    for name, allowed in choices.items():
      value = getattr(self, name)
      if value not in allowed:
        raise ValueError(
            f"TransformerConfig.{name}={value!r} is unknown; allowed: "
            f"{', '.join(map(str, allowed))}.")


def base(**overrides: Any) -> TransformerConfig:
  """The paper's base model (Table 3): N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1."""
  kwargs = dict(vocab_size=37000, d_model=512, d_ff=2048, num_heads=8,
                num_encoder_layers=6, num_decoder_layers=6, dropout_rate=0.1)
  return TransformerConfig(**{**kwargs, **overrides})


def big(**overrides: Any) -> TransformerConfig:
  """The paper's big model (Table 3): N=6, d_model=1024, d_ff=4096, h=16, P_drop=0.3."""
  kwargs = dict(vocab_size=37000, d_model=1024, d_ff=4096, num_heads=16,
                num_encoder_layers=6, num_decoder_layers=6, dropout_rate=0.3)
  return TransformerConfig(**{**kwargs, **overrides})


def tiny(**overrides: Any) -> TransformerConfig:
  """A small model that trains on a laptop CPU in minutes (tests, the built-in task)."""
  kwargs = dict(vocab_size=512, d_model=128, d_ff=512, num_heads=4,
                num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.1, max_length=64)
  return TransformerConfig(**{**kwargs, **overrides})


PRESETS = {"base": base, "big": big, "tiny": tiny}
