"""Tests of transformer/decoding.py against hand-built tokens -> logits functions.

The expected values come from an independent float64 NumPy reference: brute-force enumeration
of every sequence a model can emit, scored as log-prob / GNMT length penalty.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer.config import BOS_ID, EOS_ID, PAD_ID
from transformer.decoding import beam_search, first_argmax, greedy_search, top_k_by_chunks

A, B = 3, 4  # the two ordinary tokens; the vocabulary is PAD, EOS, BOS, A, B
VOCAB = 5
IMPOSSIBLE = (PAD_ID, BOS_ID)  # logit -inf: never emitted, so enumeration stays small


def log_softmax(logits):
  logits = np.asarray(logits, np.float64)
  finite = logits[np.isfinite(logits)]
  z = logits - finite.max()
  return z - np.log(np.exp(z).sum())


def markov_logits(probs):
  """A [VOCAB, VOCAB] table of next-token logits from {prev: {token: prob}}."""
  table = np.full((VOCAB, VOCAB), -np.inf)
  for prev, row in probs.items():
    for token, p in row.items():
      table[prev, token] = np.log(p)
  table[[PAD_ID, EOS_ID]] = table[A]  # rows never used by a live hypothesis; keep them finite
  return table


def markov_fn(table):
  """tokens_to_logits of a first-order Markov model; the cache is unused."""
  table = jnp.asarray(table, jnp.float32)
  return lambda tokens, cache: (table[tokens[:, 0]], cache)


def brute_force(next_log_probs, limit, length_penalty):
  """Every sequence of length <= limit ending in EOS, best first: [(score, tokens)].

  next_log_probs(prefix) gives float64 log-probs of the next token after prefix (BOS first).
  """
  found = []
  for n in range(1, limit + 1):
    for body in itertools.product((A, B), repeat=n - 1):
      seq = body + (EOS_ID,)
      prefix = (BOS_ID,)
      log_prob = 0.0
      for token in seq:
        log_prob += next_log_probs(prefix)[token]
        prefix += (token,)
      found.append((log_prob / ((5.0 + n) / 6.0) ** length_penalty, seq))
  return sorted(found, key=lambda item: -item[0])


def padded(seq, length):
  return list(seq) + [PAD_ID] * (length - len(seq))


def assert_well_formed(seqs):
  """Each row: tokens, one EOS, then only PAD."""
  for row in np.asarray(seqs).reshape(-1, np.shape(seqs)[-1]):
    eos = np.flatnonzero(row == EOS_ID)
    assert len(eos) == 1, row
    assert np.all(row[eos[0] + 1:] == PAD_ID), row
    assert np.all(row[:eos[0]] != PAD_ID), row


# A Markov chain where greedy is wrong: from BOS, A is likelier, but only B ends cheaply.
TRAP = markov_logits({
    BOS_ID: {A: 0.6, B: 0.4},
    A: {A: 0.36, B: 0.34, EOS_ID: 0.3},
    B: {A: 0.05, B: 0.05, EOS_ID: 0.9},
})


def test_greedy_is_not_the_best_but_beam_search_finds_it():
  next_log_probs = lambda prefix: log_softmax(TRAP[prefix[-1]])
  best = brute_force(next_log_probs, limit=3, length_penalty=0.6)
  greedy = greedy_search(markov_fn(TRAP), {}, batch_size=1, max_decode_len=3)
  np.testing.assert_array_equal(greedy, [[A, A, EOS_ID]])  # forced EOS at the limit
  assert best[0][1] == (B, EOS_ID)
  seqs, scores = beam_search(markov_fn(TRAP), {}, batch_size=1, beam_size=2, max_decode_len=3)
  np.testing.assert_array_equal(seqs[0, 0], padded(best[0][1], 3))
  np.testing.assert_allclose(scores[0, 0], best[0][0], rtol=1e-5)


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 2.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_returns_the_exact_best_sequences(seed, length_penalty):
  # With two ordinary tokens and limit 3 there are at most 4 alive prefixes, so beam 4 is
  # exhaustive: its 4 finished hypotheses must be the 4 best of all 7 sequences, in order.
  rng = np.random.default_rng(seed)
  table = rng.normal(size=(VOCAB, VOCAB)) * 1.5
  table[:, IMPOSSIBLE] = -np.inf
  expected = brute_force(lambda prefix: log_softmax(table[prefix[-1]]), limit=3,
                         length_penalty=length_penalty)[:4]
  seqs, scores = beam_search(markov_fn(table), {}, batch_size=1, beam_size=4,
                             length_penalty=length_penalty, max_decode_len=3)
  np.testing.assert_array_equal(seqs[0], [padded(seq, 3) for _, seq in expected])
  np.testing.assert_allclose(scores[0], [score for score, _ in expected], rtol=1e-5)


def test_length_penalty_changes_the_winner():
  # Long sequences are favoured as length_penalty grows: B EOS (p=.36) against A A EOS (p=.0648).
  table = markov_logits({BOS_ID: {A: 0.6, B: 0.4},
                         A: {A: 0.9, B: 0.05, EOS_ID: 0.05},
                         B: {A: 0.04, B: 0.01, EOS_ID: 0.95}})
  winners = {}
  for length_penalty in (0.0, 10.0):
    seqs, scores = beam_search(markov_fn(table), {}, batch_size=1, beam_size=4,
                               length_penalty=length_penalty, max_decode_len=3)
    best = brute_force(lambda prefix: log_softmax(table[prefix[-1]]), 3, length_penalty)[0]
    np.testing.assert_array_equal(seqs[0, 0], padded(best[1], 3))
    np.testing.assert_allclose(scores[0, 0], best[0], rtol=1e-5)
    winners[length_penalty] = best[1]
  assert winners[0.0] != winners[10.0]


@pytest.mark.parametrize("length_penalty", [0.0, 0.6])
def test_beam_size_one_is_greedy(length_penalty):
  rng = np.random.default_rng(3)
  table = rng.normal(size=(VOCAB, VOCAB))
  table[:, IMPOSSIBLE] = -np.inf
  table[:, EOS_ID] -= 1.0  # longer sequences
  fn = markov_fn(table)
  greedy = greedy_search(fn, {}, batch_size=1, max_decode_len=8)
  seqs, scores = beam_search(fn, {}, batch_size=1, beam_size=1, length_penalty=length_penalty,
                             max_decode_len=8)
  np.testing.assert_array_equal(seqs[:, 0], greedy)
  # The score is the greedy sequence's log-prob over its length penalty.
  prefix, log_prob = (BOS_ID,), 0.0
  for token in np.asarray(greedy[0]):
    if token == PAD_ID:
      break
    log_prob += log_softmax(table[prefix[-1]])[token]
    prefix += (int(token),)
  n = len(prefix) - 1
  np.testing.assert_allclose(scores[0, 0], log_prob / ((5 + n) / 6) ** length_penalty, rtol=1e-5)


def test_decoding_stops_at_eos_and_pads_after_it():
  rng = np.random.default_rng(4)
  table = rng.normal(size=(VOCAB, VOCAB))
  table[:, IMPOSSIBLE] = -np.inf
  fn = markov_fn(table)
  greedy = greedy_search(fn, {}, batch_size=3, max_decode_len=12)
  seqs, _ = beam_search(fn, {}, batch_size=3, beam_size=3, max_decode_len=12)
  assert greedy.shape == (3, 12) and greedy.dtype == jnp.int32
  assert seqs.shape == (3, 3, 12) and seqs.dtype == jnp.int32
  assert_well_formed(greedy)
  assert_well_formed(seqs)


def test_max_lengths_are_honoured():
  # Greedy never picks EOS here, so it ends with the forced EOS at each example's limit.
  table = markov_logits({BOS_ID: {A: 0.5, B: 0.3, EOS_ID: 0.2},
                         A: {A: 0.3, B: 0.5, EOS_ID: 0.2},
                         B: {A: 0.6, B: 0.1, EOS_ID: 0.3}})
  next_log_probs = lambda prefix: log_softmax(table[prefix[-1]])
  limits = np.array([1, 3, 5])
  greedy = greedy_search(markov_fn(table), {}, batch_size=3, max_decode_len=6,
                         max_lengths=jnp.asarray(limits))
  np.testing.assert_array_equal(np.argmax(np.asarray(greedy) == EOS_ID, axis=1), limits - 1)
  seqs, scores = beam_search(markov_fn(table), {}, batch_size=3, beam_size=4, max_decode_len=6,
                             max_lengths=jnp.asarray(limits))
  assert_well_formed(seqs[1:])
  # Limit 1: one possible sequence, the other slots stay empty (all PAD, score -inf).
  np.testing.assert_array_equal(seqs[0], [padded((EOS_ID,), 6)] + [padded((), 6)] * 3)
  np.testing.assert_allclose(scores[0, 1:], -np.inf)
  np.testing.assert_allclose(scores[0, 0], next_log_probs((BOS_ID,))[EOS_ID] / 1.0, rtol=1e-5)
  # Limit 3: beam 4 is exhaustive, the 4 best of all sequences no longer than 3.
  expected = brute_force(next_log_probs, 3, 0.6)[:4]
  np.testing.assert_array_equal(seqs[1], [padded(seq, 6) for _, seq in expected])
  np.testing.assert_allclose(scores[1], [score for score, _ in expected], rtol=1e-5)
  # Limit 5: every hypothesis within it, and the best no worse than any enumerated sequence's.
  assert np.all(np.argmax(np.asarray(seqs[2]) == EOS_ID, axis=-1) <= 4)
  assert scores[2, 0] >= brute_force(next_log_probs, 5, 0.6)[0][0] - 1e-5


def test_an_eos_id_no_token_has_never_ends_a_sequence():
  # decoding_benchmark decodes with eos_id=-1 so that every sentence runs max_decode_len steps.
  L = 6
  greedy = jax.jit(lambda: greedy_search(markov_fn(TRAP), {}, batch_size=2, max_decode_len=L,
                                         eos_id=-1))()
  np.testing.assert_array_equal(greedy[:, :L - 1], A)  # TRAP's argmax path, EOS never chosen
  seqs, scores = jax.jit(lambda: beam_search(markov_fn(TRAP), {}, batch_size=2, beam_size=2,
                                             max_decode_len=L, eos_id=-1))()
  assert seqs.shape == (2, 2, L) and scores.shape == (2, 2)


def test_beam_search_stops_early():
  # EOS is likely everywhere, so beam 2 is settled after a few steps of a 50-step budget.
  table = markov_logits({BOS_ID: {A: 0.05, B: 0.05, EOS_ID: 0.9},
                         A: {A: 0.05, B: 0.05, EOS_ID: 0.9},
                         B: {A: 0.05, B: 0.05, EOS_ID: 0.9}})
  steps = []

  def fn(tokens, cache):
    jax.debug.callback(lambda: steps.append(1))
    return markov_fn(table)(tokens, cache)

  seqs, _ = beam_search(fn, {}, batch_size=1, beam_size=2, max_decode_len=50)
  jax.effects_barrier()
  assert_well_formed(seqs)
  assert 1 <= len(steps) <= 5, len(steps)
  steps.clear()
  greedy_search(fn, {}, batch_size=1, max_decode_len=50)
  jax.effects_barrier()
  assert len(steps) == 1


# A model whose next token depends on the whole prefix and on a per-example source vector:
# hidden = tanh(src + sum_i EMBED[i, prefix_i]), with a random embedding per position.
D, MAX_POS = 8, 16
_rng = np.random.default_rng(5)
EMBED = _rng.normal(size=(MAX_POS, VOCAB, D))
OUT, SRC = _rng.normal(size=(D, VOCAB)), _rng.normal(size=(2, D))
EOS_BIAS = -1.0 * (np.arange(VOCAB) == EOS_ID)  # longer sequences, so the beams diverge


def history_log_probs(example, prefix):
  """Uncached float64 reference: the whole prefix (BOS first) -> next-token log-probs."""
  hidden = np.tanh(SRC[example] + EMBED[np.arange(len(prefix)), list(prefix)].sum(axis=0))
  logits = hidden @ OUT + EOS_BIAS
  logits[list(IMPOSSIBLE)] = -np.inf
  return log_softmax(logits)


def history_fn(tokens, cache):
  """The same model, cached: stores the history and a scalar step counter."""
  step = cache["step"]
  history = cache["history"].at[:, step].set(tokens[:, 0])  # [N, MAX_POS]
  embedded = jnp.asarray(EMBED, jnp.float32)[jnp.arange(MAX_POS), history]  # [N, MAX_POS, D]
  embedded = jnp.where((jnp.arange(MAX_POS) <= step)[:, None], embedded, 0.0)
  hidden = jnp.tanh(cache["src"] + embedded.sum(axis=1))
  logits = hidden @ jnp.asarray(OUT, jnp.float32) + jnp.asarray(EOS_BIAS, jnp.float32)
  logits = logits.at[:, list(IMPOSSIBLE)].set(-jnp.inf)
  return logits, {"src": cache["src"], "history": history, "step": step + 1}


def history_cache():
  return {"src": jnp.asarray(SRC, jnp.float32), "history": jnp.zeros((2, MAX_POS), jnp.int32),
          "step": jnp.int32(0)}


def test_cache_is_threaded_and_reordered_with_the_beams():
  length_penalty = 0.6
  seqs, scores = beam_search(history_fn, history_cache(), batch_size=2, beam_size=4,
                             length_penalty=length_penalty, max_decode_len=3)
  for example in range(2):
    expected = brute_force(lambda prefix: history_log_probs(example, prefix), 3, length_penalty)[:4]
    np.testing.assert_array_equal(seqs[example], [padded(seq, 3) for _, seq in expected])
    np.testing.assert_allclose(scores[example], [score for score, _ in expected], rtol=1e-5)


@pytest.mark.parametrize("beam_size", [2, 3])
def test_longer_beam_scores_match_the_uncached_model(beam_size):
  # Not exhaustive: each returned hypothesis's score must equal the uncached model's
  # log-prob of exactly that sequence, which fails if cache rows do not follow their beams.
  # Beam 2 keeps 4 of the 5 tokens per beam before ranking the beam's 2 x 4 candidates.
  length_penalty, max_length = 0.6, 10
  seqs, scores = beam_search(history_fn, history_cache(), batch_size=2, beam_size=beam_size,
                             length_penalty=length_penalty, max_decode_len=max_length)
  assert_well_formed(seqs)
  for example, beam in itertools.product(range(2), range(beam_size)):
    seq = [int(t) for t in seqs[example, beam] if t != PAD_ID]
    prefix, log_prob = (BOS_ID,), 0.0
    for token in seq:
      log_prob += history_log_probs(example, prefix)[token]
      prefix += (token,)
    np.testing.assert_allclose(scores[example, beam],
                               log_prob / ((5 + len(seq)) / 6) ** length_penalty, rtol=1e-5)
  assert np.all(np.diff(np.asarray(scores), axis=1) <= 0)  # best first


def test_greedy_matches_the_uncached_model():
  max_length = 10
  greedy = greedy_search(history_fn, history_cache(), batch_size=2,
                         max_decode_len=max_length)
  for example in range(2):
    prefix = (BOS_ID,)
    while prefix[-1] != EOS_ID and len(prefix) <= max_length:
      log_probs = history_log_probs(example, prefix)
      if len(prefix) == max_length:
        log_probs = np.where(np.arange(VOCAB) == EOS_ID, log_probs, -np.inf)
      prefix += (int(np.argmax(log_probs)),)
    np.testing.assert_array_equal(greedy[example], padded(prefix[1:], max_length))


def test_jit_traces_the_step_once_and_matches_eager():
  traces = []

  def fn(tokens, cache):
    traces.append(tokens.shape)
    return history_fn(tokens, cache)

  search = jax.jit(lambda cache, limits: beam_search(
      fn, cache, batch_size=2, beam_size=3, max_decode_len=12, max_lengths=limits))
  limits = jnp.array([12, 5], jnp.int32)
  seqs, scores = search(history_cache(), limits)
  # Not one trace per position: the first step once per sentence (every beam would start from
  # BOS with the same cache), then the loop's step on sentences x beams.
  assert traces == [(2, 1), (6, 1)]
  eager_seqs, eager_scores = beam_search(history_fn, history_cache(), batch_size=2,
                                         beam_size=3, max_decode_len=12, max_lengths=limits)
  np.testing.assert_array_equal(seqs, eager_seqs)
  np.testing.assert_allclose(scores, eager_scores, rtol=1e-6)
  assert np.all(np.argmax(np.asarray(seqs[1]) == EOS_ID, axis=-1) < 5)
  traces.clear()
  greedy = jax.jit(lambda cache: greedy_search(fn, cache, batch_size=2, max_decode_len=12))
  np.testing.assert_array_equal(greedy(history_cache()),
                                greedy_search(history_fn, history_cache(), batch_size=2,
                                              max_decode_len=12))
  assert traces == [(2, 1)]


def test_bad_arguments_are_rejected():
  fn = markov_fn(TRAP)
  with pytest.raises(ValueError, match="leading axis"):
    beam_search(fn, {"x": jnp.zeros((3, 2))}, batch_size=2, max_decode_len=4)
  with pytest.raises(ValueError, match="beam_size=0"):
    beam_search(fn, {}, batch_size=2, beam_size=0, max_decode_len=4)
  with pytest.raises(ValueError, match="max_decode_len=0"):
    greedy_search(fn, {}, batch_size=2, max_decode_len=0)
  with pytest.raises(ValueError, match="max_lengths"):
    greedy_search(fn, {}, batch_size=2, max_decode_len=4, max_lengths=jnp.array([1, 2, 3]))


@pytest.mark.parametrize("shape, k, chunk", [
    ((4, 3, 1000), 8, 32),   # beam 4's per-beam candidates, 1000 = 31 chunks + 8 padded slots
    ((6, 8000), 8, 32),      # the benchmark's vocabulary
    ((5, 300), 2, 16),
    ((3, 40), 8, 32),        # two chunks, fewer than k: lax.top_k itself
])
@pytest.mark.parametrize("values", ["normal", "ties", "infinities"])
def test_top_k_by_chunks_is_lax_top_k(shape, k, chunk, values):
  rng = np.random.default_rng(sum(shape) + k)
  x = rng.standard_normal(shape).astype(np.float32)
  if values == "ties":  # few distinct values: ties inside chunks, across chunks and at the k-th
    x = np.round(x * 2) / 2
  elif values == "infinities":  # forced-EOS rows: all -inf but one; some +inf
    x[0] = -np.inf
    x[0, ..., -1] = 0.0
    x[-1, ..., ::97] = np.inf
  want_values, want_index = jax.lax.top_k(jnp.asarray(x), k)
  got_values, got_index = jax.jit(lambda a: top_k_by_chunks(a, k, chunk))(jnp.asarray(x))
  np.testing.assert_array_equal(got_values, want_values)
  np.testing.assert_array_equal(got_index, want_index)


def test_first_argmax_is_jnp_argmax():
  rng = np.random.default_rng(0)
  x = rng.integers(-3, 3, size=(6, 50)).astype(np.float32)  # many ties: the first one wins
  x[1] = -np.inf
  x[2, 7] = np.inf
  x[3] = x[3, 0]  # a constant row
  x = jnp.asarray(x)
  top = jnp.max(x, axis=-1, keepdims=True)
  np.testing.assert_array_equal(jax.jit(first_argmax)(x, top), jnp.argmax(x, axis=-1))
