"""§5.4 dropout, with masks drawn from fewer random bits.

`nn.Dropout` keeps an element when a uniform float32 drawn for it falls below 1 - P_drop: one
threefry hash per element, whose 64 output bits are folded into the 32 that make the float. On
a CPU those hashes are most of what dropout costs (about 13.6 million elements a step for the
small model of issue 14: 210 ms of random numbers with `jax.random.bernoulli`, 62 ms this
way; docs/performance.md). With `random_bits=16` each element gets 16 bits instead, four per
hash (`threefry2x32` returns both of a hash's 32-bit words), and is kept
when they fall below round((1 - P_drop) * 2^16): the keep probability is that threshold over
2^16 (P_drop = 0.1 drops 0.100006 of the elements), and the kept ones are scaled by its inverse,
so the expected output still equals the input. `random_bits=32` is `nn.Dropout` exactly.

The hashes' counters follow the elements' rows (`keep_mask`), so a batch sharded over
devices draws its masks where its rows lie, with no collective, and the same masks as one
device would (the flat counts of `threefry_2x32` cost the Multi30k step 104 all-gathers and
collective-permutes over two CPU devices; docs/performance.md).

The hash is `threefry2x32`, Threefry-2x32 with 20 rounds (Salmon et al., 2011) written out
round by round: the same words as jax's `threefry2x32_p`, whose CPU lowering rolls the rounds
into a five-trip while loop (it compiles faster), so that on a CPU each dropout of a training
step ran three fusions and 13 copies five times over instead of one fusion with its mask.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# Threefry-2x32's rotation distances, alternating by group of four rounds, and the constant of
# its key schedule (Salmon et al., 2011, Table 4 and §3.2.1; the values of jax's threefry2x32_p).
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = 0x1BD11BDA


def threefry2x32(key_0: Array, key_1: Array, count_0: Array, count_1: Array
                 ) -> tuple[Array, Array]:
  """The two 32-bit words of Threefry-2x32 (20 rounds) of the counts under the key, elementwise
  (uint32, broadcast as `jnp` does): what `jax.extend.random.threefry2x32_p` returns, written
  out round by round so that XLA fuses it on every backend (its CPU lowering is a loop)."""
  u32 = jnp.uint32
  keys = (key_0, key_1, key_0 ^ key_1 ^ u32(_KEY_PARITY))
  x_0, x_1 = count_0 + keys[0], count_1 + keys[1]
  for group in range(5):
    for distance in _ROTATIONS[group % 2]:
      x_0 = x_0 + x_1
      x_1 = jax.lax.shift_left(x_1, u32(distance)) | jax.lax.shift_right_logical(
          x_1, u32(32 - distance))
      x_1 = x_0 ^ x_1
    x_0 = x_0 + keys[(group + 1) % 3]
    x_1 = x_1 + keys[(group + 2) % 3] + u32(group + 1)
  return x_0, x_1


def keep_threshold(rate: float) -> int:
  """The 16-bit draws below this are kept: round((1 - rate) * 2^16), at least 1."""
  return max(1, round((1.0 - rate) * 65536))


def _linear_index(shape: tuple[int, ...]) -> Array:
  """Each element's row-major position in `shape`, as uint32, built from one iota per axis so
  that a sharded caller's share is computed where it lies (a flat iota reshaped would not be)."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    stride *= shape[axis]
  return index


def keep_mask(key: Array, shape: tuple[int, ...], threshold: int) -> Array | None:
  """Which elements of `shape` a 16-bit draw keeps (draw < `threshold`), four draws per threefry
  hash; None when `key` is not a threefry key (another PRNG implementation draws its own way).

  Hash h (counter h, 0) gives the elements 4h..4h+3 along the last axis, each row's positions
  padded up to a multiple of four. The counters have the elements' shape but for the last axis,
  and the hash is applied to them elementwise (`threefry2x32`, as `jax.random.bits` applies
  `threefry2x32_p` when `jax_threefry_partitionable` is on): with the batch axis sharded, each
  device hashes its own rows and nothing crosses devices. (`threefry_2x32` itself flattens its
  counts and splits them in two halves, which under data parallelism moved each device's half
  to the other and gathered the result back.) Each quarter is compared before the four are
  interleaved, so what the backward pass keeps of the forward's is a byte per element, not the
  32-bit draws."""
  data = jax.random.key_data(key)
  if data.shape != (2,) or data.dtype != jnp.uint32:
    return None
  if not shape or math.prod(shape) == 0:
    return jnp.zeros(shape, bool) if shape else keep_mask(key, (1,), threshold).reshape(())
  *rows, last = shape
  hashes = (last + 3) // 4
  if math.prod(rows) * hashes >= 2 ** 32:
    raise ValueError(f"dropout over {math.prod(shape):,} elements: more than 2^32 counters")
  counters = _linear_index((*rows, hashes))
  word_0, word_1 = threefry2x32(data[0], data[1], counters, jnp.zeros_like(counters))
  limit = jnp.uint32(threshold)
  keep = jnp.stack([(word_0 & 0xFFFF) < limit, (word_0 >> 16) < limit,
                    (word_1 & 0xFFFF) < limit, (word_1 >> 16) < limit], axis=-1)
  return keep.reshape(*rows, 4 * hashes)[..., :last]


class Dropout(nn.Module):
  """Zeroes each element with probability `rate` and scales the rest to keep the mean (§5.4).

  `random_bits`: 16 (four elements per threefry hash, the keep probability rounded to a
  multiple of 2^-16) or 32 (`nn.Dropout`'s bernoulli draw, bit for bit)."""

  rate: float
  random_bits: int = 16
  rng_collection: str = "dropout"

  @nn.compact
  def __call__(self, inputs: Array, deterministic: bool) -> Array:
    if self.rate == 0.0 or deterministic:
      return inputs
    key = self.make_rng(self.rng_collection)
    threshold = keep_threshold(self.rate)
    keep = keep_mask(key, inputs.shape, threshold) if self.random_bits == 16 else None
    if keep is None:
      return nn.Dropout(self.rate, rng_collection=self.rng_collection)(
          inputs, deterministic=False, rng=key)
    # scaled in float32, rounded once per element: a bfloat16 scale would itself be rounded
    # (1.11112 -> 1.109375 for P_drop = 0.1) and shrink every kept element by the same 0.16%
    scaled = (inputs * jnp.float32(65536.0 / threshold)).astype(inputs.dtype)
    return jnp.where(keep, scaled, jnp.zeros_like(inputs))
