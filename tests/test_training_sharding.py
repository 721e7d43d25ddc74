"""The FSDP rule and the FLOP count (the multi-device runs are in test_training_distributed.py)."""

from jax.sharding import PartitionSpec as P

from transformer.config import TransformerConfig
from transformer.training.flops import forward_flops, train_step_flops
from transformer.training.sharding import fsdp_spec


def test_fsdp_shards_the_largest_divisible_axis_or_replicates():
  assert fsdp_spec((512, 2048), 8) == P(None, "data")
  assert fsdp_spec((2048, 512), 8) == P("data", None)
  assert fsdp_spec((37000, 512), 8) == P("data", None)   # 37000 = 8 x 4625
  assert fsdp_spec((37001, 512), 8) == P(None, "data")   # the vocabulary axis does not divide
  assert fsdp_spec((6,), 8) == P()                       # nothing divides: replicated
  assert fsdp_spec((), 8) == P()                          # scalars (Adam's count)
  assert fsdp_spec((512, 2048), 1) == P()


def test_flops_count_attention_over_the_padded_rows():
  kwargs = dict(rows=1, d_model=4, d_ff=8, num_encoder_layers=1, num_decoder_layers=1,
                vocab_size=10)
  # Doubling the lengths more than doubles the FLOPs: attention is quadratic in length.
  short = forward_flops(source_len=8, target_len=8, **kwargs)
  long = forward_flops(source_len=16, target_len=16, **kwargs)
  d, s, t, ff, v = 4, 8, 8, 8, 10
  by_hand = 2 * (s * (4 * d * d + 2 * d * ff + 2 * s * d)
                 + t * (4 * d * d + 2 * t * d) + t * (2 * d * d + 2 * s * d) + s * 2 * d * d
                 + t * 2 * d * ff + t * d * v)
  assert short == by_hand
  assert long > 2 * short
  config = TransformerConfig(vocab_size=10, d_model=4, d_ff=8, num_heads=2,
                             num_encoder_layers=1, num_decoder_layers=1)
  assert train_step_flops(config, rows=1, source_len=8, target_len=8, grad_accum_steps=2) == (
      6 * short)
