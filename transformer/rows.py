"""Position-wise products (§3.3: "applied to each position separately and identically") applied
to the positions as one 2-D matrix of rows.

A dense layer on [batch, length, features] contracts only the features; its weight gradient
contracts batch and length together. Written on the 3-D array, XLA's CPU backend made that
gradient's operand contiguous with a transposed copy of it ([26, 64, 1024] -> [1024, 1664] for
each feed-forward layer of the Multi30k step, [26, 64, 8000] -> [8000, 1664] for the output
projection); on [batch x length, features] rows the same products need no copy. The reshapes
are free (row-major bitcasts) on every backend. docs/performance.md has the measurements.
"""

from __future__ import annotations

from typing import Callable

import jax

Array = jax.Array


def over_rows(fn: Callable[[Array], Array], x: Array, feature_dims: int = 1) -> Array:
  """fn applied to x with its leading (position) dimensions flattened into one, then restored:
  fn maps [rows, *x.shape[-feature_dims:]] to [rows, *out_features]."""
  leading = x.shape[:x.ndim - feature_dims]
  y = fn(x.reshape(-1, *x.shape[x.ndim - feature_dims:]))
  return y.reshape(*leading, *y.shape[1:])
