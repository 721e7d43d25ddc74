"""The built-in task: a number written out in words in one language -> the same number in another.

German number words are long compounds ("vierundzwanzig", "dreihunderteinundvierzigtausend"),
so translating them into English words ("twenty-four") needs real reordering, yet a tiny model
learns the task on a laptop CPU in minutes and nothing is downloaded (`num2words` writes both).

How the splits are drawn (all a function of `seed`):
  * Numbers >= 100 are held out with probability 5% (one uniform draw per number); half of the
    held-out numbers may appear in validation, the other half in test. Train never sees them,
    so the three splits are disjoint.
  * Train holds every number 0..99 once, then numbers drawn uniformly over the digit count
    (a 1-digit number is as likely as a 6-digit one) from the numbers not held out. Drawing
    uniformly over the range would leave small numbers rare and the model bad at them.
  * Validation and test draw distinct numbers, as evenly over the digit counts 3..D as their pools
    allow, in a seeded order.
"""

from __future__ import annotations

import functools

import numpy as np
from absl import logging

from transformer.data import forked_parts

HELD_OUT_FRACTION = 0.05
ALWAYS_IN_TRAIN = 100          # 0..99 are all in train, and never held out
MIN_MAX_NUMBER = 999
MIN_NUMBERS_PER_PROCESS = 5_000


def _words(n: int, lang: str) -> str:
  from num2words import num2words  # pylint: disable=g-import-not-at-top
  return num2words(int(n), lang=lang)


@functools.lru_cache(maxsize=8)
def _draw_numbers(max_number: int, num_train: int, num_validation: int, num_test: int,
                  seed: int) -> dict[str, np.ndarray]:
  """Returns {"train", "validation", "test"} -> int64 arrays of numbers."""
  if max_number < MIN_MAX_NUMBER:
    raise ValueError(
        f"config.numbers.max_number={max_number} is too small; it must be at least "
        f"{MIN_MAX_NUMBER} so that validation and test can hold numbers that train never sees.")
  for name, value in (("num_train", num_train), ("num_validation", num_validation),
                      ("num_test", num_test)):
    if value < 0:
      raise ValueError(f"config.numbers.{name}={value} must be >= 0.")
  if num_train < ALWAYS_IN_TRAIN:
    raise ValueError(f"config.numbers.num_train={num_train} must be at least {ALWAYS_IN_TRAIN} "
                     f"(train always holds 0..{ALWAYS_IN_TRAIN - 1}).")
  rng = np.random.default_rng([seed, 0x4E554D])
  u = rng.random(max_number + 1)                      # one draw per number decides its split
  numbers = np.arange(max_number + 1)
  held = (u < HELD_OUT_FRACTION) & (numbers >= ALWAYS_IN_TRAIN)
  in_val_pool = held & (u < HELD_OUT_FRACTION / 2)
  in_test_pool = held & ~in_val_pool
  num_digits = len(str(max_number))
  # Digit-count classes [10^(d-1), 10^d) clipped to max_number (class 1 includes 0).
  classes = []
  for d in range(1, num_digits + 1):
    lo, hi = (0 if d == 1 else 10 ** (d - 1)), min(10 ** d - 1, max_number)
    classes.append((lo, hi))

  # Train: 0..99, then uniform over the digit count, rejecting held-out numbers.
  extra = num_train - ALWAYS_IN_TRAIN
  digit_class = rng.integers(0, len(classes), size=extra)
  drawn = np.empty(extra, dtype=np.int64)
  for c, (lo, hi) in enumerate(classes):
    mask = digit_class == c
    pool = numbers[lo:hi + 1][~held[lo:hi + 1]]
    drawn[mask] = rng.choice(pool, size=int(mask.sum()))
  train = np.concatenate([np.arange(ALWAYS_IN_TRAIN), drawn])
  train = train[rng.permutation(len(train))]

  def held_out(pool_mask: np.ndarray, count: int) -> np.ndarray:
    pools = [rng.permutation(numbers[lo:hi + 1][pool_mask[lo:hi + 1]])
             for lo, hi in classes if hi >= ALWAYS_IN_TRAIN]
    total = sum(len(p) for p in pools)
    if count > total:
      raise ValueError(f"Only {total} numbers are held out for this split with "
                       f"config.numbers.max_number={max_number}; ask for fewer or raise "
                       "max_number.")
    # Water-filling: as even as possible over digit counts, within each pool's size.
    take = [0] * len(pools)
    left = count
    while left:
      open_pools = [i for i, p in enumerate(pools) if take[i] < len(p)]
      share = max(1, left // len(open_pools))
      for i in open_pools:
        step = min(share, len(pools[i]) - take[i], left)
        take[i] += step
        left -= step
        if not left:
          break
    chosen = np.concatenate([p[:k] for p, k in zip(pools, take)])
    return chosen[rng.permutation(len(chosen))]

  validation = held_out(in_val_pool, num_validation)
  test = held_out(in_test_pool, num_test)
  return {"train": train, "validation": validation, "test": test}


@functools.lru_cache(maxsize=8)
def _cached_pairs(max_number, num_train, num_validation, num_test, seed, source_lang,
                  target_lang, split):
  numbers = _draw_numbers(max_number, num_train, num_validation, num_test, seed)[split]
  unique, inverse = np.unique(numbers, return_inverse=True)
  try:
    _words(0, source_lang), _words(0, target_lang)
  except NotImplementedError as e:
    raise ValueError(
        f"num2words cannot write numbers in config.source_lang={source_lang!r} or "
        f"config.target_lang={target_lang!r} ({e}); choose languages num2words supports, "
        f"e.g. 'de' and 'en'.") from e
  # num2words is pure Python (about 0.1 ms a number): the 40,000 distinct numbers of the default
  # training split are written on every core.
  parts = forked_parts.map_parts(
      functools.partial(_pairs_of_numbers, source_lang=source_lang, target_lang=target_lang),
      unique.tolist(), min_items_per_process=MIN_NUMBERS_PER_PROCESS)
  pairs = [pair for part in parts for pair in part]
  logging.info("Number task: %d %s pairs (%d distinct numbers), seed %d.", len(numbers), split,
               len(unique), seed)
  return tuple(pairs[i] for i in inverse)


def _pairs_of_numbers(numbers: list[int], source_lang: str, target_lang: str
                      ) -> list[tuple[str, str]]:
  return [(_words(n, source_lang), _words(n, target_lang)) for n in numbers]


SPLITS = ("train", "validation", "test")


def number_pairs(numbers_config, split: str, *, seed: int, source_lang: str = "de",
                 target_lang: str = "en") -> list[tuple[str, str]]:
  """The (source words, target words) pairs of one split of the number task, in a fixed order."""
  if split not in SPLITS:
    raise ValueError(f"The number task has splits {', '.join(SPLITS)}; got split={split!r}. "
                     f"Set config.train_split / eval_split / test_split to one of them.")
  return list(_cached_pairs(int(numbers_config.max_number), int(numbers_config.num_train),
                            int(numbers_config.num_validation), int(numbers_config.num_test),
                            int(seed), source_lang, target_lang, split))


def number_of_pair_numbers(numbers_config, split: str, *, seed: int) -> np.ndarray:
  """The integers behind `number_pairs` (for tests and analysis)."""
  return _draw_numbers(int(numbers_config.max_number), int(numbers_config.num_train),
                       int(numbers_config.num_validation), int(numbers_config.num_test),
                       int(seed))[split].copy()
