"""Kernel choice per platform and call, its logged fallbacks, and the Pallas kernels' numerics
(interpreted on the CPU) against the einsum reference."""

import functools
import logging as pylogging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer import attention_kernels as K
from transformer.attention import scaled_dot_product_attention, segment_mask
from transformer.attention_kernels import AttentionCall, AttentionMask
from transformer.config import tiny
from transformer.model import Transformer

GPU_BF16 = dict(platform="gpu", dtype="bfloat16", head_dim=64, q_len=64, k_len=64,
                gpu_compute_capability=9.0)


@pytest.mark.parametrize("call,expected", [
    (dict(GPU_BF16), "cudnn"),
    (dict(GPU_BF16, causal=True), "cudnn"),
    (dict(GPU_BF16, q_len=32), "cudnn"),                      # cross-attention, padded
    (dict(GPU_BF16, packed=True, causal=True), "pallas_gpu"),  # packed self-attention
    (dict(GPU_BF16, packed=True, q_len=32), "xla"),            # packed cross-attention
    (dict(GPU_BF16, dtype="float32"), "pallas_gpu"),           # cuDNN takes 16-bit inputs only
    (dict(GPU_BF16, head_dim=200, gpu_compute_capability=8.0), "pallas_gpu"),
    (dict(GPU_BF16, dense_mask=True), "xla"),                  # the decoding cache's mask
    (dict(GPU_BF16, platform="tpu", q_len=128, k_len=128), "splash"),
    (dict(GPU_BF16, platform="tpu", q_len=100, k_len=100), "xla"),
    (dict(GPU_BF16, platform="cpu"), "xla"),
    (dict(GPU_BF16, packed=True, causal=True, devices=8), "xla"),  # Pallas: one device only
    (dict(GPU_BF16, platform="tpu", q_len=128, k_len=128, devices=8), "xla"),
    (dict(GPU_BF16, devices=8), "cudnn"),  # jax partitions cuDNN attention itself
])
def test_auto_takes_the_first_kernel_that_serves_the_call(call, expected):
  assert K.choose_kernel("auto", AttentionCall(**call)) == (expected, None)


def test_a_named_kernel_that_cannot_serve_falls_back_to_xla_with_the_reason():
  kernel, reason = K.choose_kernel("cudnn", AttentionCall(**dict(GPU_BF16, packed=True)))
  assert kernel == "xla" and "packed" in reason
  kernel, reason = K.choose_kernel("splash", AttentionCall(**dict(GPU_BF16)))
  assert kernel == "xla" and "TPU" in reason
  assert K.choose_kernel("dot_product", AttentionCall(**GPU_BF16)) == ("xla", None)


@pytest.fixture
def absl_records(caplog):
  caplog.set_level(pylogging.INFO, logger="absl")
  K._ANNOUNCED.clear()
  yield caplog
  K._ANNOUNCED.clear()


def _apply(cfg, inputs, targets, rngs=None):
  params = Transformer(cfg.replace(deterministic=True)).init(jax.random.key(0), inputs, targets)
  return Transformer(cfg).apply(params, inputs, targets, rngs=rngs)


def test_the_model_logs_each_choice_once_and_warns_on_fallback(absl_records):
  inputs = jnp.ones((2, 8), jnp.int32)
  cfg = tiny(attention_impl="cudnn", deterministic=True)  # on this CPU: falls back
  _apply(cfg, inputs, inputs)
  _apply(cfg, inputs, inputs)
  warnings = [r for r in absl_records.records if r.levelno == pylogging.WARNING]
  assert warnings, "a fallback must be announced"
  assert all("cuDNN runs on NVIDIA GPUs" in r.getMessage() for r in warnings)
  # One warning per distinct call (encoder self, decoder self, cross), not one per layer or trace.
  assert len(warnings) == len({r.getMessage() for r in warnings}) <= 3
  absl_records.clear()
  _apply(tiny(attention_impl="auto", deterministic=True), inputs, inputs)
  infos = [r.getMessage() for r in absl_records.records]
  assert any("runs 'xla' (attention_impl='auto')" in m for m in infos)


def test_attention_dropout_announces_the_einsum_path(absl_records):
  inputs = jnp.ones((2, 8), jnp.int32)
  cfg = tiny(attention_impl="auto", attention_dropout_rate=0.1)
  _apply(cfg, inputs, inputs, rngs={"dropout": jax.random.key(1)})
  messages = [r.getMessage() for r in absl_records.records if r.levelno == pylogging.WARNING]
  assert any("attention_dropout_rate=0.1 needs the attention weights" in m for m in messages)


def test_attention_mask_dense_is_the_segment_mask_and_causal_mask():
  q = jnp.array([[1, 1, 2, 2, 0]])
  k = jnp.array([[1, 1, 2, 2, 0]])
  dense = AttentionMask(q, k, causal=True).dense()
  expected = segment_mask(q, k) & jnp.tril(jnp.ones((5, 5), bool))[None, None]
  np.testing.assert_array_equal(dense, expected)


def _inputs(rows, length, heads, depth, packed, seed=0):
  rng = np.random.default_rng(seed)
  segments = np.zeros((rows, length), np.int32)
  if packed:
    segments[:, :length // 2] = 1
    segments[:, length // 2:length - 8] = 2
  else:
    segments[0, :length - 16] = 1
    segments[1:, :] = 1
  q, k, v = (jnp.asarray(rng.standard_normal((rows, length, heads, depth)), jnp.float32)
             for _ in range(3))
  return q, k, v, jnp.asarray(segments)


@pytest.mark.parametrize("kernel", ["pallas_gpu", "splash"])
@pytest.mark.parametrize("packed,causal", [(False, False), (True, True)])
def test_pallas_kernels_match_the_reference_interpreted(kernel, packed, causal):
  q, k, v, segments = _inputs(2, 128, 2, 16, packed)
  mask = AttentionMask(segments, segments, causal=causal, packed=packed)
  real = np.asarray(segments != 0)[:, :, None, None]
  fused = functools.partial(K.FUSED[kernel], mask=mask, interpret=True)
  reference = functools.partial(scaled_dot_product_attention, mask=mask)

  def loss(fn, q, k, v):
    return jnp.sum(fn(q, k, v) * jnp.asarray(real, jnp.float32) * jnp.cos(q))

  np.testing.assert_allclose(np.where(real, fused(q, k, v), 0),
                             np.where(real, reference(q, k, v), 0), atol=2e-5)
  got = jax.grad(functools.partial(loss, fused), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(functools.partial(loss, reference), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=5e-5)
