"""§3.1 the full model: shapes, masking properties, packing, cached decoding, dtypes, sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer import config as C
from transformer.attention import CROSS_CACHE_NAMES
from transformer.decoding import beam_search
from transformer.model import (
  Transformer,
  decode_step,
  init_decode_cache,
  is_sentence_cache,
  shift_right,
)
from transformer.models import count_params, init_params

CFG = C.tiny(vocab_size=50, d_model=32, d_ff=64, num_heads=4, max_length=24, dropout_rate=0.1)


@pytest.fixture(scope="module")
def params():
  return init_params(CFG, jax.random.key(0))


def _tokens(seed, shape, pad_from=None):
  tokens = np.random.default_rng(seed).integers(4, CFG.vocab_size, shape).astype(np.int32)
  if pad_from is not None:
    tokens[:, pad_from:] = C.PAD_ID
  return jnp.asarray(tokens)


def _logits(params, inputs, targets, cfg=CFG, **kwargs):
  apply = jax.jit(Transformer(cfg.replace(deterministic=True)).apply)
  return apply({"params": params}, inputs, targets, **kwargs)


def test_shapes_and_training_mode_dropout(params):
  inputs, targets = _tokens(0, (3, 9)), _tokens(1, (3, 7))
  logits = _logits(params, inputs, targets)
  assert logits.shape == (3, 7, CFG.vocab_size) and logits.dtype == jnp.float32
  train = jax.jit(Transformer(CFG).apply)({"params": params}, inputs, targets,
                                          rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(train, logits)  # Dropout is active in training mode.
  encoded = Transformer(CFG.replace(deterministic=True)).apply(
      {"params": params}, inputs, method=Transformer.encode)
  assert encoded.shape == (3, 9, CFG.d_model)


def test_shift_right_puts_bos_first_in_every_segment():
  targets = jnp.array([[5, 6, 1, 7, 1, 0]])
  segments = jnp.array([[1, 1, 1, 2, 2, 0]])
  assert shift_right(targets).tolist() == [[2, 5, 6, 1, 7, 1]]
  assert shift_right(targets, segments).tolist() == [[2, 5, 6, 2, 7, 2]]


def test_causal_mask_leaks_nothing(params):
  inputs, targets = _tokens(0, (2, 8)), _tokens(1, (2, 8))
  changed = targets.at[:, 5:].set(_tokens(2, (2, 3)))
  a, b = _logits(params, inputs, targets), _logits(params, inputs, changed)
  # The decoder sees targets shifted right: position i depends on targets[:i] only.
  np.testing.assert_allclose(a[:, :6], b[:, :6], atol=1e-6)
  assert not np.allclose(a[:, 6:], b[:, 6:])


def test_extra_source_padding_changes_nothing(params):
  inputs, targets = _tokens(0, (2, 6)), _tokens(1, (2, 5))
  padded = jnp.pad(inputs, ((0, 0), (0, 7)))
  np.testing.assert_allclose(_logits(params, inputs, targets),
                             _logits(params, padded, targets), atol=1e-5)
  encode = jax.jit(lambda x: Transformer(CFG.replace(deterministic=True)).apply(
      {"params": params}, x, method=Transformer.encode))
  encoded, short = encode(padded), encode(inputs)
  np.testing.assert_allclose(encoded[:, :6], short, atol=1e-5)


def test_packed_pairs_never_see_each_other(params):
  src_a, tgt_a = _tokens(3, (1, 4)), _tokens(4, (1, 3))
  src_b, tgt_b = _tokens(5, (1, 6)), _tokens(6, (1, 5))
  inputs = jnp.concatenate([src_a, src_b, jnp.zeros((1, 2), jnp.int32)], axis=1)
  targets = jnp.concatenate([tgt_a, tgt_b, jnp.zeros((1, 1), jnp.int32)], axis=1)
  seg = lambda n1, n2, pad: jnp.array([[1] * n1 + [2] * n2 + [0] * pad])
  pos = lambda n1, n2, pad: jnp.array([list(range(n1)) + list(range(n2)) + [0] * pad])
  packed = _logits(params, inputs, targets,
                   inputs_segmentation=seg(4, 6, 2), targets_segmentation=seg(3, 5, 1),
                   inputs_positions=pos(4, 6, 2), targets_positions=pos(3, 5, 1))
  np.testing.assert_allclose(packed[:, :3], _logits(params, src_a, tgt_a), atol=1e-5)
  np.testing.assert_allclose(packed[:, 3:8], _logits(params, src_b, tgt_b), atol=1e-5)


@pytest.mark.parametrize("norm_order", ["post", "pre"])
def test_cached_decoding_reproduces_full_decoder(norm_order):
  cfg = CFG.replace(norm_order=norm_order)
  params = init_params(cfg, jax.random.key(1))
  inputs = _tokens(7, (2, 9)).at[1, 6:].set(C.PAD_ID)
  targets = _tokens(8, (2, 7))
  full = _logits(params, inputs, targets, cfg=cfg)
  cache = init_decode_cache(cfg, params, inputs, max_decode_len=7)
  step = jax.jit(lambda c, t: decode_step(cfg, params, c, t))
  previous = jnp.full((2, 1), C.BOS_ID, jnp.int32)
  for i in range(7):
    logits, cache = step(cache, previous)
    np.testing.assert_allclose(logits, full[:, i], atol=1e-5)
    previous = targets[:, i:i + 1]


def test_cache_leaves_are_batch_major_except_counters(params):
  cache = init_decode_cache(CFG, params, _tokens(0, (3, 5)), max_decode_len=6)
  for leaf in jax.tree.leaves(cache):
    assert leaf.ndim == 0 or leaf.shape[0] == 3


def test_a_cache_made_for_the_beam_searches_as_gathering_every_cache(params):
  # With `beams`, the self-attention keys and values hold a slot per beam and only an index of
  # slots follows the beams; a cache made for one row is searched by gathering every layer's
  # keys and values by parent beam. Both must find the same hypotheses with the same scores.
  inputs = _tokens(3, (3, 8)).at[2, 5:].set(C.PAD_ID)
  step = jax.jit(lambda tokens, cache: decode_step(CFG, params, cache, tokens))

  def search(cache, per_sentence):
    return beam_search(step, cache, batch_size=3, beam_size=3, max_decode_len=10,
                       per_sentence=per_sentence)

  slotted = init_decode_cache(CFG, params, inputs, max_decode_len=10, beams=3)
  layer = slotted["decoder"]["layer_0"]["self_attention"]
  assert layer["cached_key"].shape == (3, CFG.num_heads, 3 * 10, CFG.head_dim)
  assert layer["cache_slot"].shape == (3, 10)
  sequences, scores = search(slotted, is_sentence_cache)
  expected, expected_scores = search(
      init_decode_cache(CFG, params, inputs, max_decode_len=10),
      lambda path: getattr(path[-1], "key", None) in CROSS_CACHE_NAMES)
  np.testing.assert_array_equal(sequences, expected)
  np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
  assert len({tuple(s) for s in np.asarray(sequences).reshape(9, 10).tolist()}) > 3
  with pytest.raises(ValueError, match=r"beams=0 must be a positive integer"):
    init_decode_cache(CFG, params, inputs, max_decode_len=10, beams=0)


def test_decode_step_without_cache_says_how_to_make_one(params):
  with pytest.raises(ValueError, match="init_decode_cache"):
    decode_step(CFG, params, {}, jnp.ones((1, 1), jnp.int32))


@pytest.mark.parametrize("impl", ["einsum", "xla", "dot_product", "auto"])
def test_attention_implementations_agree_in_the_model(params, impl):
  inputs, targets = _tokens(0, (2, 8), pad_from=6), _tokens(1, (2, 6))
  ref = _logits(params, inputs, targets)
  got = _logits(params, inputs, targets, cfg=CFG.replace(attention_impl=impl))
  np.testing.assert_allclose(got, ref, atol=1e-5)


def test_attention_weights_can_be_read_out(params):
  inputs, targets = _tokens(0, (1, 5)), _tokens(1, (1, 4))
  _, state = Transformer(CFG.replace(deterministic=True)).apply(
      {"params": params}, inputs, targets, mutable=["intermediates"])
  cross = state["intermediates"]["decoder"]["layer_0"]["cross_attention"]["attention_weights"][0]
  assert cross.shape == (1, CFG.num_heads, 4, 5)
  masked_self = (
      state["intermediates"]["decoder"]["layer_1"]["self_attention"]["attention_weights"][0])
  assert float(jnp.triu(masked_self[0, 0], k=1).max()) == 0.0


def test_separate_embeddings_when_not_shared():
  cfg = CFG.replace(share_embeddings=False)
  params = init_params(cfg, jax.random.key(0))
  assert {"source_embedding", "target_embedding", "output_embedding"} <= set(params)
  assert count_params(params) - count_params(init_params(CFG, jax.random.key(0))) == (
      2 * CFG.vocab_size * CFG.d_model)


def test_bfloat16_forward_stays_close_to_float32(params):
  inputs, targets = _tokens(0, (2, 8)), _tokens(1, (2, 6))
  ref = _logits(params, inputs, targets)
  bf16 = _logits(params, inputs, targets, cfg=CFG.replace(dtype="bfloat16"))
  assert bf16.dtype == jnp.float32  # Logits come back in float32 whatever the compute dtype.
  assert float(jnp.abs(bf16 - ref).max()) < 0.1 * float(jnp.abs(ref).max())
  np.testing.assert_array_equal(
      jnp.argmax(bf16, -1)[ref.max(-1) - jnp.sort(ref, -1)[..., -2] > 0.1],
      jnp.argmax(ref, -1)[ref.max(-1) - jnp.sort(ref, -1)[..., -2] > 0.1])


def test_inputs_longer_than_max_len_are_rejected(params):
  too_long = _tokens(0, (1, CFG.max_length + 1))
  with pytest.raises(ValueError, match=r"exceeds TransformerConfig.max_length=24"):
    _logits(params, too_long, _tokens(1, (1, 3)))
  with pytest.raises(ValueError, match="max_decode_len=30"):
    init_decode_cache(CFG, params, _tokens(0, (1, 3)), max_decode_len=30)


# Exact counts with a shared vocabulary of 37,000 (EN-DE) and bias-free attention projections:
#   base: embedding 37,000 x 512 = 18,944,000
#         encoder layer 4 x 512^2 (W^Q,K,V,O) + 2 x 512 x 2048 + 2048 + 512 (FFN) + 2 x 1,024 (LN)
#           = 3,150,336, x 6 = 18,902,016
#         decoder layer 8 x 512^2 + FFN 2,099,712 + 3 x 1,024 = 4,199,936, x 6 = 25,199,616
#         total 63,045,632: Table 3 says 65M (-3.0%; the paper gives no counting rule).
#   big:  37,888,000 + 6 x 12,592,128 + 6 x 16,788,480 = 214,171,648: Table 3 says 213M (+0.5%).
# attention_bias=True adds 4 x d_model per attention: 6 x (4 + 8) x 512 = 36,864 for base.
@pytest.mark.parametrize("preset,bias,expected", [
    ("base", False, 63_045_632), ("big", False, 214_171_648), ("base", True, 63_082_496)])
def test_paper_parameter_counts(preset, bias, expected):
  cfg = C.PRESETS[preset](attention_bias=bias)
  dummy = jnp.ones((1, 4), jnp.int32)
  shapes = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.key(0), dummy, dummy))
  assert count_params(shapes["params"]) == expected
