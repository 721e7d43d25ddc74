"""§5.4 dropout drawn from 16 random bits per element (transformer/dropout.py)."""

import json
import math
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry2x32_p

from transformer import config as C
from transformer.dropout import Dropout, keep_mask, keep_threshold, threefry2x32


def _apply(module, x, key, deterministic=False):
  return module.apply({}, x, deterministic, rngs={"dropout": key})


def test_32_bits_is_flax_dropout_bit_for_bit():
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 33))
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(_apply(Dropout(0.3, random_bits=32), x, key),
                                nn.Dropout(0.3).apply({}, x, False, rngs={"dropout": key}))


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_16_bits_keeps_the_quantised_probability_and_the_mean(rate):
  x = jnp.full((1000, 1000), 2.0)
  out = np.asarray(_apply(Dropout(rate), x, jax.random.PRNGKey(0)))
  keep = keep_threshold(rate) / 65536
  assert abs(keep - (1 - rate)) <= 2 ** -17
  kept = out != 0
  # a million draws: the kept fraction within 5 standard deviations of the keep probability
  assert abs(kept.mean() - keep) < 5 * np.sqrt(keep * (1 - keep) / out.size)
  np.testing.assert_array_equal(out[kept], np.float32(2.0 * 65536 / keep_threshold(rate)))
  # no structure left by the four-per-hash split: each quarter of every row keeps its share
  for quarter in range(4):
    assert abs(kept[:, quarter::4].mean() - keep) < 5 * np.sqrt(keep * (1 - keep) / (out.size / 4))


def test_bfloat16_inputs_are_scaled_without_a_rounded_scale():
  x = jax.random.uniform(jax.random.PRNGKey(2), (1000, 1000), minval=1.0, maxval=2.0)
  x = x.astype(jnp.bfloat16)
  out = _apply(Dropout(0.1), x, jax.random.PRNGKey(0))
  assert out.dtype == jnp.bfloat16
  kept = np.asarray(out != 0)
  ratio = np.asarray(out, np.float64)[kept] / np.asarray(x, np.float64)[kept]
  # each element rounded once: the ratios average the exact scale (a bfloat16 scale: 1.109375)
  assert abs(ratio.mean() - 65536 / keep_threshold(0.1)) < 2e-4


def test_16_bit_masks_follow_the_key_and_any_shape():
  x = jnp.ones((3, 5, 7))  # an odd number of elements
  a, b = (_apply(Dropout(0.5), x, jax.random.PRNGKey(k)) for k in (0, 1))
  assert a.shape == x.shape and not np.array_equal(a, b)
  np.testing.assert_array_equal(a, _apply(Dropout(0.5), x, jax.random.PRNGKey(0)))
  typed = _apply(Dropout(0.5), x, jax.random.key(0))  # a typed threefry key draws the same
  np.testing.assert_array_equal(a, typed)


def test_no_dropout_when_deterministic_or_rate_zero_and_other_prngs_fall_back():
  x = jnp.arange(12.0).reshape(3, 4)
  np.testing.assert_array_equal(_apply(Dropout(0.5), x, jax.random.PRNGKey(0), True), x)
  np.testing.assert_array_equal(_apply(Dropout(0.0), x, jax.random.PRNGKey(0)), x)
  rbg = jax.random.key(0, impl="rbg")  # not threefry: nn.Dropout's draw
  np.testing.assert_array_equal(_apply(Dropout(0.5), x, rbg),
                                nn.Dropout(0.5).apply({}, x, False, rngs={"dropout": rbg}))


def test_the_config_field_names_its_choices_and_old_models_keep_32_bits():
  with pytest.raises(ValueError, match="dropout_random_bits=8"):
    C.tiny(dropout_random_bits=8)
  assert C.TransformerConfig().dropout_random_bits == 16
  assert C.upgrade_record({"d_model": 64})["dropout_random_bits"] == 32


SHARDED_DROPOUT = """
    import json, jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from transformer.dropout import Dropout
    mesh = jax.make_mesh((2,), ("data",))
    rows = NamedSharding(mesh, P("data"))
    x = jax.random.normal(jax.random.key(3), (8, 6, 10))   # 10: not a multiple of four
    def drop(x, key):
      return Dropout(0.3).apply({}, x, False, rngs={"dropout": key})
    key = jax.random.key(5)
    sharded = jax.jit(drop, in_shardings=(rows, None), out_shardings=rows)
    hlo = sharded.lower(jax.device_put(x, rows), key).compile().as_text()
    collectives = [op for op in ("all-gather", "collective-permute", "all-to-all", "all-reduce")
                   if op + "(" in hlo or op + "-start(" in hlo]
    same = bool(np.array_equal(sharded(jax.device_put(x, rows), key),
                               jax.jit(drop)(jax.device_put(x, jax.devices()[0]), key)))
    print(json.dumps({"collectives": collectives, "same": same}))
"""


def test_batch_sharded_masks_are_drawn_where_the_rows_lie_and_match_one_device():
  """Under data parallelism each device hashes its own rows: no collective in the program (the
  flat counts of `threefry_2x32` were split in halves, each device's moved to the other and the
  result gathered back), and the masks are the ones a single device draws."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(SHARDED_DROPOUT)], env=env,
                          cwd=pathlib.Path(__file__).parent.parent, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.splitlines()[-1]) == {"collectives": [], "same": True}


def test_16_bit_masks_differ_between_rows_and_between_elements_of_one_hash():
  kept = np.asarray(_apply(Dropout(0.5), jnp.ones((64, 4, 12)), jax.random.PRNGKey(3)) != 0)
  assert len({row.tobytes() for row in kept.reshape(64, -1)}) == 64
  # the four 16-bit quarters of one hash (four neighbours on the last axis) are not tied
  quads = kept.reshape(-1, 4)
  assert 0.05 < (quads == quads[:, :1]).all(axis=1).mean() < 0.2  # 1/8 if independent


def test_the_backward_pass_keeps_a_byte_per_element_not_the_32_bit_draws():
  """What the gradient reuses of the forward's dropout is its mask: no uint32 array with an
  element per input is formed (comparing after interleaving the four 16-bit quarters let XLA keep
  the stacked 32-bit draws for the backward instead: 4 bytes an element, read again there)."""
  x = jnp.ones((8, 16, 64))
  w = jnp.full((64, 64), 0.01)

  def loss(x, w, key):
    y = Dropout(0.1).apply({}, x @ w, False, rngs={"dropout": key})
    return jnp.sum(jnp.tanh(y) @ w)

  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w, jax.random.key(0)).compile().as_text()

  def sizes(dtype):
    return {math.prod(int(n) for n in dims.split(","))
            for dims in re.findall(dtype + r"\[([\d,]+)\]", hlo)}
  assert sizes("u32"), "no uint32 array at all: the hashes were not compiled as expected"
  assert max(sizes("u32")) < x.size, sorted(sizes("u32"))
  assert x.size in sizes("pred")  # the mask, a byte an element


def test_the_hash_is_threefry_2x32_word_for_word():
  """`threefry2x32` against the published known-answer vectors of Threefry-2x32-20 (Random123's
  kat_vectors) and against jax's own primitive on random keys and counts."""
  u32 = np.uint32
  for key, count, expected in [
      ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
      ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
      ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]:
    words = threefry2x32(*(jnp.asarray(u32(v)) for v in (*key, *count)))
    assert tuple(int(w) for w in words) == expected
  rng = np.random.default_rng(0)
  key_0, key_1 = (jnp.asarray(rng.integers(0, 2 ** 32, dtype=u32)) for _ in range(2))
  count_0, count_1 = (jnp.asarray(rng.integers(0, 2 ** 32, (3, 5, 7), dtype=u32)) for _ in range(2))
  ours = jax.jit(threefry2x32)(key_0, key_1, count_0, count_1)
  jaxs = threefry2x32_p.bind(key_0, key_1, count_0, count_1)
  for a, b in zip(ours, jaxs, strict=True):
    np.testing.assert_array_equal(a, b)


def test_a_mask_compiles_to_one_pass_without_a_loop():
  """jax lowers `threefry2x32_p` on CPU as a five-trip while loop; the mask's hash is written out
  so that XLA fuses it with the comparisons (each training step ran 26 such loops before)."""
  hlo = jax.jit(lambda key: keep_mask(key, (8, 16, 64), keep_threshold(0.1))).lower(
      jax.random.key(0)).compile().as_text()
  assert " while(" not in hlo
