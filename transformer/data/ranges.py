"""One numpy idiom the data code shares: many ranges of an array gathered end to end."""

from __future__ import annotations

import numpy as np


def concatenated_ranges(begin: np.ndarray, n: np.ndarray) -> np.ndarray:
  """begin[0], ..., begin[0] + n[0] - 1, begin[1], ...: the ranges end to end, without a loop."""
  start = np.cumsum(n) - n                  # where each range starts in the output
  return np.arange(int(n.sum())) + np.repeat(begin - start, n)
