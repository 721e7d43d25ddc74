"""The FSDP rule (the multi-device runs are in test_training_distributed.py)."""

from jax.sharding import PartitionSpec as P

from transformer.training.sharding import fsdp_spec


def test_fsdp_shards_the_largest_divisible_axis_or_replicates():
  assert fsdp_spec((512, 2048), 8) == P(None, "data")
  assert fsdp_spec((2048, 512), 8) == P("data", None)
  assert fsdp_spec((37000, 512), 8) == P("data", None)   # 37000 = 8 x 4625
  assert fsdp_spec((37001, 512), 8) == P(None, "data")   # the vocabulary axis does not divide
  assert fsdp_spec((6,), 8) == P()                       # nothing divides: replicated
  assert fsdp_spec((), 8) == P()                          # scalars (Adam's count)
  assert fsdp_spec((512, 2048), 1) == P()
