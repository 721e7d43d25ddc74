"""FLOPs of a training step and the peak FLOP/s of known devices (for MFU).

Counting rule (matmuls only; a multiply-add is 2 FLOPs; softmax, LayerNorm, dropout, embedding
lookups and the optimizer are left out, as is usual for MFU). For a batch of `rows` rows of
source length S and target length T, d = d_model, V = vocabulary:

  encoder layer, per source token: Q,K,V,O projections 4 d^2 + feed-forward 2 d d_ff
                                   + attention scores Q K^T (S d) + weighted values (S d)
  decoder layer, per target token: self-attention 4 d^2 + 2 T d, cross-attention Q,O 2 d^2
                                   + 2 S d, feed-forward 2 d d_ff;
                 per source token: cross-attention K,V projections 2 d^2
  output projection, per target token: d V

A decoder-only model (a language model) has no encoder and no cross-attention: its layers are
the decoder's masked self-attention and feed-forward, over the T positions of `targets`.

(multiply-adds). Attention is counted over the whole padded row, S keys per query in the
encoder and T in the decoder's self-attention: the causal mask and packing masks do not skip
work in this implementation, so that is the work done. Training = 3 x forward (the backward
pass costs twice the forward). A step with gradient accumulation k counts k batches.
"""

from __future__ import annotations

# Peak dense (not sparse) FLOP/s per device: (pattern in `device.device_kind`, name, bfloat16,
# float32). GPUs' float32 figures are TF32 tensor-core peaks, which XLA uses for float32 matmuls
# by default; TPUs have no float32 matmul peak of their own (XLA runs passes of bfloat16), so
# they report none. Order matters: the first pattern found in the kind string decides, so more
# specific names ("H100 PCIe", "L40S", "A100") come before those they contain ("H100", "L4",
# "A10"). Vendors' datasheets: NVIDIA H100 SXM/PCIe/NVL, H200, A100, L4, L40S; Google Cloud TPU
# system architecture pages (v4, v5e, v5p, v6e).
PEAK_FLOPS = (
    ("H100 PCIe", "H100 PCIe", 756e12, 378e12),
    ("H100 NVL", "H100 NVL", 835e12, 418e12),
    ("H100", "H100 SXM", 989e12, 494e12),
    ("H200", "H200", 989e12, 494e12),
    ("A100", "A100", 312e12, 156e12),
    ("L40S", "L40S", 362e12, 183e12),
    ("L4", "L4", 121e12, 60e12),
    ("TPU v6 lite", "TPU v6e", 918e12, None),
    ("TPU v6e", "TPU v6e", 918e12, None),
    ("TPU v5 lite", "TPU v5e", 197e12, None),
    ("TPU v5e", "TPU v5e", 197e12, None),
    ("TPU v5p", "TPU v5p", 459e12, None),
    ("TPU v5", "TPU v5p", 459e12, None),
    ("TPU v4", "TPU v4", 275e12, None),
)


def forward_flops(*, rows: int, source_len: int, target_len: int, d_model: int, d_ff: int,
                  num_encoder_layers: int, num_decoder_layers: int, vocab_size: int,
                  cross_attention: bool = True) -> float:
  """Matmul FLOPs of one forward pass over a [rows, S] x [rows, T] batch (see module doc)."""
  d, s, t = d_model, source_len, target_len
  encoder = num_encoder_layers * s * (4 * d * d + 2 * d * d_ff + 2 * s * d)
  cross = (t * (2 * d * d + 2 * s * d)     # cross-attention queries, output, scores, values
           + s * (2 * d * d))              # cross-attention keys and values of the source
  decoder = num_decoder_layers * (
      t * (4 * d * d + 2 * t * d)          # masked self-attention
      + (cross if cross_attention else 0)
      + t * (2 * d * d_ff))                # feed-forward
  output = t * d * vocab_size
  return 2.0 * rows * (encoder + decoder + output)


def train_step_flops(model_config, *, rows: int, source_len: int, target_len: int,
                     grad_accum_steps: int = 1) -> float:
  """FLOPs of one optimizer update: 3 x forward x accumulated batches."""
  fwd = forward_flops(
      rows=rows, source_len=source_len, target_len=target_len, d_model=model_config.d_model,
      d_ff=model_config.d_ff, num_encoder_layers=model_config.num_encoder_layers,
      num_decoder_layers=model_config.num_decoder_layers, vocab_size=model_config.vocab_size,
      cross_attention=model_config.architecture == "encoder_decoder")
  return 3.0 * fwd * grad_accum_steps


def batch_flops(model_config, batch: dict, process_count: int = 1) -> float:
  """FLOPs of one train step on `batch` (this host's rows; every host's batch has this shape).
  A decoder-only model's `inputs` are the targets' context, not a source."""
  rows, source_len = batch["inputs"].shape
  if model_config.architecture == "decoder_only":
    source_len = 0
  return train_step_flops(model_config, rows=rows * process_count, source_len=source_len,
                          target_len=batch["targets"].shape[1])


def peak_flops_per_device(device, dtype: str = "bfloat16") -> tuple[float | None, str]:
  """(peak FLOP/s, description) for a jax device, or (None, "unknown ...") when not known:
  CPUs, kinds not in PEAK_FLOPS, and float32 on TPUs. Never a guess."""
  kind = getattr(device, "device_kind", "") or ""
  if device.platform == "cpu":
    return None, f"unknown for CPU ({kind})"
  for pattern, name, bf16, fp32 in PEAK_FLOPS:
    if pattern.lower() in kind.lower():
      peak = bf16 if dtype in ("bfloat16", "float16") else fp32
      if peak is None:
        return None, f"unknown for {name} in {dtype}"
      return peak, f"{peak / 1e12:.0f} TFLOP/s per device ({name}, {dtype} dense)"
  return None, f"unknown for {kind!r}"
