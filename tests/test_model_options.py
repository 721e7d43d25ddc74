"""Options that must not change the function: scanned layers, rematerialisation; and bfloat16
compute against float32 on the same batch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer.config import tiny
from transformer.model import (
  Transformer,
  decode_step,
  init_decode_cache,
  unrolled_params,
)
from transformer.models import batch_forward, init_params
from transformer.training.steps import init_state, train_step

CFG = tiny(vocab_size=64, d_model=32, d_ff=64, num_heads=4, num_encoder_layers=3,
           num_decoder_layers=2, max_length=24, dropout_rate=0.0, deterministic=True)


def _tokens(seed, shape, pad_from=None):
  tokens = jax.random.randint(jax.random.key(seed), shape, 4, CFG.vocab_size)
  if pad_from is not None:
    tokens = tokens.at[:, pad_from:].set(0)
  return tokens


def _stacked(params, cfg):
  """The unrolled model's parameters in the scanned model's layout (layers stacked on axis 0)."""
  params = dict(params)
  for stack, count in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
    tree = dict(params[stack])
    layers = [tree.pop(f"layer_{i}") for i in range(count)]
    tree["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
    params[stack] = tree
  return params


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.key(0))


def test_scanned_layers_compute_the_unrolled_function(params):
  scanned = CFG.replace(scan_layers=True)
  inputs, targets = _tokens(1, (2, 9), pad_from=7), _tokens(2, (2, 6))
  want = Transformer(CFG).apply({"params": params}, inputs, targets)
  got = Transformer(scanned).apply({"params": _stacked(params, CFG)}, inputs, targets)
  np.testing.assert_allclose(got, want, atol=1e-5)
  # The scanned model's own initialisation has the stacked layout.
  fresh = init_params(scanned, jax.random.key(3))
  assert fresh["encoder"]["layers"]["self_attention"]["query"]["kernel"].shape[0] == 3


def test_decoding_a_scanned_model_equals_the_unrolled_one(params):
  scanned, stacked = CFG.replace(scan_layers=True), _stacked(params, CFG)
  config, back = unrolled_params(scanned, stacked)
  assert not config.scan_layers
  jax.tree.map(np.testing.assert_array_equal, back, params)
  inputs = _tokens(4, (2, 7))
  caches = [init_decode_cache(c, p, inputs, 5) for c, p in ((CFG, params), (scanned, stacked))]
  token = jnp.full((2, 1), 2, jnp.int32)
  for _ in range(3):
    (want, caches[0]), (got, caches[1]) = (decode_step(c, p, cache, token) for c, p, cache in (
        (CFG, params, caches[0]), (scanned, stacked, caches[1])))
    np.testing.assert_allclose(got, want, atol=1e-5)
    token = jnp.argmax(want, -1)[:, None]


@pytest.mark.parametrize("policy", ["dots", "full"])
@pytest.mark.parametrize("scan", [False, True])
def test_rematerialisation_changes_no_gradient(params, policy, scan):
  base = CFG.replace(scan_layers=scan, deterministic=False, dropout_rate=0.1)
  p = _stacked(params, CFG) if scan else params
  inputs, targets = _tokens(5, (2, 8), pad_from=6), _tokens(6, (2, 7))

  def grads(cfg):
    loss = lambda p: jnp.sum(Transformer(cfg).apply(
        {"params": p}, inputs, targets, rngs={"dropout": jax.random.key(7)}) ** 2)
    return jax.jit(jax.grad(loss))(p)

  want, got = grads(base), grads(base.replace(remat_policy=policy))
  # Equal up to float32 reassociation (recomputed values fuse differently): 1e-5 of each
  # gradient's largest entry.
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=1e-5 * np.abs(w).max()),
               got, want)


def test_bfloat16_step_tracks_float32_on_the_same_batch():
  """Loss within 1% and gradient norm within 5% (bfloat16 keeps ~3 significant digits; its
  logits, softmax and loss stay float32, see transformer/precision.py)."""
  cfg32 = CFG.replace(deterministic=False, dropout_rate=0.0, vocab_size=256, d_model=64,
                      d_ff=128)
  batch = {"inputs": np.asarray(_tokens(8, (8, 16), pad_from=13)),
           "targets": np.asarray(_tokens(9, (8, 12), pad_from=10))}
  tx = optax.adam(1e-3)
  results = {}
  for dtype in ("float32", "bfloat16"):
    cfg = cfg32.replace(dtype=dtype)
    state = init_state(cfg, tx, jax.random.key(0))
    step = jax.jit(functools.partial(train_step, forward=batch_forward(cfg), tx=tx,
                                     label_smoothing=0.1, dropout_key=jax.random.key(1)))
    new_state, metrics = step(state, batch)
    assert new_state.params["shared_embedding"]["embedding"].dtype == jnp.float32
    assert jax.tree.leaves(new_state.opt_state)[1].dtype == jnp.float32
    results[dtype] = (float(metrics["loss_sum"] / metrics["tokens"]), float(metrics["grad_norm"]))
  (loss32, norm32), (loss16, norm16) = results["float32"], results["bfloat16"]
  assert abs(loss16 - loss32) / loss32 < 0.01
  assert abs(norm16 - norm32) / norm32 < 0.05


def test_bfloat16_logits_are_float32():
  cfg = CFG.replace(dtype="bfloat16")
  params = init_params(cfg, jax.random.key(0))
  logits = Transformer(cfg).apply({"params": params}, _tokens(1, (1, 5)), _tokens(2, (1, 4)))
  assert logits.dtype == jnp.float32
