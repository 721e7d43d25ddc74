"""Greedy and beam search over a `tokens -> logits` function (§6.1).

Both searches know nothing of the Transformer. They take

    tokens_to_logits(tokens, cache) -> (logits, new_cache)

where `tokens` is int32 [N, 1] (the previous token; `BOS_ID` at the first step), `logits` is
[N, vocab] for the next token, and `cache` is any pytree whose leaves have N as leading axis,
except 0-d leaves (step counters), which are passed through untouched. Beam search expands a
batch-B cache to B * beam rows itself and reorders the rows as beams are chosen. Leaves that
serve all of a sentence's beams at once can be named by `per_sentence(path)`: they are then kept
once per sentence, neither repeated per beam nor gathered at every step. The Transformer's are
the cross-attention keys and values (from the source alone) and, with a cache made for the beam,
the self-attention keys and values, which hold a slot per beam that the model addresses itself
(transformer/attention.py): only a small per-beam index of slots is reordered.

Both run inside one `lax.while_loop` (no Python loop per step) and are jit-compatible with
`tokens_to_logits` closed over:

    decode = jax.jit(lambda cache: beam_search(fn, cache, batch_size=B, max_decode_len=L))

Output conventions: sequences carry no BOS, end with EOS and are PAD (0) after it. A
hypothesis is forced to end with EOS at its length limit, min(max_lengths[b], max_decode_len),
so every returned sequence contains EOS (the paper's limit is input length + 50, §6.1).

Scores (beam search): `sum(log p(y_t | y_<t)) / lp(|y|)`, the log-probability of the whole
sequence EOS included, divided by GNMT's length penalty lp(n) = ((5 + n) / 6) ** length_penalty
with n the number of tokens EOS included (Wu et al., 2016). length_penalty=0 ranks by
log-probability; the paper uses beam 4, length_penalty 0.6. A forced EOS costs its model
log-probability (the other tokens are masked after the softmax, not renormalised), so the score
is the model's probability of what was emitted.

The beam search follows the design of Flax's examples/wmt decode.py (2 * beam candidates per
step, separate alive and finished sets, the length-penalty bound for stopping early).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from transformer.config import BOS_ID, EOS_ID, PAD_ID

Cache = Any
TokensToLogits = Callable[[jax.Array, Cache], tuple[jax.Array, Cache]]

NEG_INF = -jnp.inf


def length_normalizer(length, length_penalty: float):
  """GNMT's length penalty ((5 + length) / 6) ** length_penalty; `length` counts EOS."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** length_penalty


def _check_args(cache, batch_size, max_decode_len, beam_size=1):
  for name, value in (("batch_size", batch_size), ("max_decode_len", max_decode_len),
                      ("beam_size", beam_size)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"{name}={value!r} must be a positive integer.")
  for path, leaf in jax.tree_util.tree_leaves_with_path(cache):
    if jnp.ndim(leaf) and jnp.shape(leaf)[0] != batch_size:
      raise ValueError(
          f"cache leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; every non-scalar "
          f"leaf needs the batch ({batch_size}) as its leading axis.")


def _limits(max_lengths, batch_size, max_decode_len):
  """Per-example output limit in tokens, EOS included: int32 [batch], in [1, max_decode_len]."""
  if max_lengths is None:
    return jnp.full((batch_size,), max_decode_len, jnp.int32)
  max_lengths = jnp.asarray(max_lengths, jnp.int32)
  if max_lengths.shape != (batch_size,):
    raise ValueError(f"max_lengths has shape {max_lengths.shape}; expected ({batch_size},).")
  return jnp.clip(max_lengths, 1, max_decode_len)


def _log_softmax_parts(logits):
  """What log_softmax needs, without writing the [rows, vocab] log-probs: (the logits as
  float32, their maximum [..., 1], and the log of the softmax's denominator [..., 1]). A token's
  log-prob is (its logit - maximum) - log denominator, the arithmetic of `jax.nn.log_softmax`.
  The searches pick tokens on the logits themselves and form log-probs only for the picked."""
  logits = logits.astype(jnp.float32)
  top = lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  return logits, top, jnp.log(jnp.sum(jnp.exp(logits - top), axis=-1, keepdims=True))


def _forced_candidates(logits, top, k, eos_id):
  """The k candidates of a row at its length limit, where a hypothesis can only end: (values
  [..., k] = EOS's logit - max, then -inf; tokens int32 [k] = EOS, then the lowest other ids: what
  a top_k over the row masked to EOS gives). With an `eos_id` outside the vocabulary
  (decoding_benchmark's NO_EOS) all k are -inf, on tokens 0..k-1."""
  if not 0 <= eos_id < logits.shape[-1]:
    return jnp.full(logits.shape[:-1] + (k,), NEG_INF), jnp.arange(k, dtype=jnp.int32)
  others = jnp.arange(k - 1, dtype=jnp.int32)
  values = jnp.concatenate([logits[..., eos_id:eos_id + 1] - top,
                            jnp.full(logits.shape[:-1] + (k - 1,), NEG_INF)], axis=-1)
  return values, jnp.concatenate([jnp.array([eos_id], jnp.int32), others + (others >= eos_id)])


def first_argmax(logits, top):
  """`jnp.argmax` over the last axis, given the maximum `top` [..., 1]: the first index holding
  it, found by a min-reduce over indices. One operand: XLA's CPU backend vectorises that, not
  argmax's (value, index) reduce, which took 934 us a step for [32, 8000] on the 2-core CPU of
  docs/performance.md (this: about 100-170 us). A row with a NaN gets the last index."""
  vocab = logits.shape[-1]
  index = lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  return jnp.minimum(jnp.min(jnp.where(logits == top, index, vocab), axis=-1), vocab - 1)


def _greedy(tokens_to_logits, cache, batch_size, max_decode_len, max_lengths, eos_id, bos_id):
  """Greedy search; returns (sequences [B, L], log-prob sums [B], lengths [B])."""
  _check_args(cache, batch_size, max_decode_len)
  limits = _limits(max_lengths, batch_size, max_decode_len)

  def cond(state):
    step, _, _, done, *_ = state
    return (step < max_decode_len) & ~jnp.all(done)

  def body(state):
    step, seqs, last, done, log_prob, length, cache = state
    logits, cache = tokens_to_logits(last[:, None], cache)
    logits, top, log_denominator = _log_softmax_parts(logits)
    token = first_argmax(logits, top)
    best = jnp.take_along_axis(logits, token[:, None], -1) - top  # [B, 1]
    forced_best, forced_token = _forced_candidates(logits, top, 1, eos_id)
    force_eos = step + 1 >= limits
    token = jnp.where(force_eos, forced_token[0], token)
    token_lp = jnp.where(force_eos[:, None], forced_best, best) - log_denominator  # [B, 1]
    log_prob += jnp.where(done, 0.0, token_lp[:, 0])
    length += ~done
    token = jnp.where(done, PAD_ID, token)
    seqs = seqs.at[:, step].set(token)
    return step + 1, seqs, token, done | (token == eos_id), log_prob, length, cache

  state = (jnp.int32(0), jnp.zeros((batch_size, max_decode_len), jnp.int32),
           jnp.full((batch_size,), bos_id, jnp.int32), jnp.zeros((batch_size,), bool),
           jnp.zeros((batch_size,), jnp.float32), jnp.zeros((batch_size,), jnp.int32), cache)
  _, seqs, _, _, log_prob, length, _ = lax.while_loop(cond, body, state)
  return seqs, log_prob, length


def greedy_search(tokens_to_logits: TokensToLogits, cache: Cache, *, batch_size: int,
                  max_decode_len: int, max_lengths=None, eos_id: int = EOS_ID,
                  bos_id: int = BOS_ID) -> jax.Array:
  """Greedy decoding: the most probable next token at every step.

  Args:
    tokens_to_logits: (tokens int32 [B, 1], cache) -> (logits [B, vocab], new cache).
    cache: the initial cache, batch B on every non-scalar leaf.
    batch_size: B.
    max_decode_len: length of the output; a sequence reaching it ends with a forced EOS.
    max_lengths: optional int32 [B], a per-example limit (tokens, EOS included).
    eos_id, bos_id: the end token, and the token fed at the first step.

  Returns:
    int32 [B, max_decode_len]: the tokens, EOS included, PAD after it, no BOS.
  """
  seqs, _, _ = _greedy(tokens_to_logits, cache, batch_size, max_decode_len, max_lengths,
                       eos_id, bos_id)
  return seqs


def _repeat_rows(tree, times, per_sentence=None):
  """[B, ...] -> [B * times, ...] (each row repeated `times` times); 0-d and `per_sentence`
  leaves unchanged."""
  def repeat(path, x):
    if not jnp.ndim(x) or (per_sentence is not None and per_sentence(path)):
      return x
    return jnp.repeat(x, times, axis=0)
  return jax.tree_util.tree_map_with_path(repeat, tree)


def _take_rows(tree, rows, per_sentence=None):
  """Gathers rows (int [N]) along the leading axis; 0-d and `per_sentence` leaves unchanged."""
  def take(path, x):
    if not jnp.ndim(x) or (per_sentence is not None and per_sentence(path)):
      return x
    return x[rows]
  return jax.tree_util.tree_map_with_path(take, tree)


def top_k_by_chunks(x: jax.Array, k: int, chunk: int = 32) -> tuple[jax.Array, jax.Array]:
  """`lax.top_k(x, k)` along the last axis, the same values and indices for inputs without NaN
  (ties to the lower index as there, -inf included), without `lax.top_k` over the whole axis:
  XLA's CPU TopK costs about 3 ns an element (2.9 ms a step for beam 4's [128, 8,000] per-beam
  candidates, docs/performance.md).

  The axis is cut into chunks of `chunk`; only the k chunks with the largest maxima (ties to the
  lower chunk) can hold the top k. Were an element of the top k in another chunk, each of those k
  chunks would hold an element ranked before it (a larger value, or an equal one at a lower
  index, since a chunk that ties on its maximum and was chosen first lies before it). So one
  reduction, a top_k over the chunk maxima and one over k * chunk candidates replace the top_k
  over the axis. Falls back to `lax.top_k` where the axis has fewer than k + 1 chunks.
  """
  *lead, n = x.shape
  chunks_count = -(-n // chunk)
  if chunks_count <= k:
    return lax.top_k(x, k)
  pad = chunks_count * chunk - n
  if pad:  # padding ranks last: -inf at the highest indices
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, pad)], constant_values=-jnp.inf)
  chunks = x.reshape(*lead, chunks_count, chunk)
  chosen = jnp.sort(lax.top_k(chunks.max(-1), k)[1], axis=-1)  # [..., k], in index order
  candidates = jnp.take_along_axis(chunks, chosen[..., None], axis=-2)  # [..., k, chunk]
  values, position = lax.top_k(candidates.reshape(*lead, k * chunk), k)
  index = jnp.take_along_axis(chosen, position // chunk, -1) * chunk + position % chunk
  return values, index


def _top(k, scores, *arrays):
  """The k best entries along axis 1 of `scores` [B, M], best first, and of each array."""
  scores, index = lax.top_k(scores, k)
  return (scores,) + tuple(jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)),
                                               axis=1) for a in arrays)


def beam_search(tokens_to_logits: TokensToLogits, cache: Cache, *, batch_size: int,
                beam_size: int = 4, length_penalty: float = 0.6, max_decode_len: int,
                max_lengths=None, eos_id: int = EOS_ID, bos_id: int = BOS_ID,
                per_sentence: Callable[[Any], bool] | None = None) -> tuple[jax.Array, jax.Array]:
  """Beam search with GNMT's length penalty (§6.1: beam 4, length_penalty 0.6).

  Each step extends the `beam_size` alive hypotheses by every token, keeps the 2 * beam_size
  most probable extensions (so that beam_size of them survive even if the rest end), moves those
  ending in EOS to the finished set (scored by log-prob / length penalty) and the best
  beam_size others to the alive set. The search stops at max_decode_len, or earlier once, for
  every example, no alive hypothesis can beat the worst of beam_size finished ones: an alive
  log-prob only falls, so its best final score is log-prob / max lp(n) over its reachable
  lengths n.

  beam_size=1 is greedy search (a width-1 beam could otherwise keep a second hypothesis alive
  after the most probable one has ended).

  Args:
    tokens_to_logits: (tokens int32 [B * beam, 1], cache) -> (logits [B * beam, vocab], cache).
    cache: the initial cache with batch B (not B * beam): it is expanded here.
    batch_size: B.
    beam_size: hypotheses kept per example.
    length_penalty: length-penalty exponent; 0 ranks by log-probability alone.
    max_decode_len: length of the output; a hypothesis reaching it ends with a forced EOS.
    max_lengths: optional int32 [B], a per-example limit (tokens, EOS included).
    eos_id, bos_id: the end token, and the token fed at the first step.
    per_sentence: optional predicate on a cache leaf's key path: True for leaves that serve all
      beams of a sentence (the same on every beam, or holding each beam's part where the model
      finds it). They stay [B, ...], once per sentence, neither repeated per beam nor reordered,
      so `tokens_to_logits` must accept a cache whose named leaves have B rows while its tokens
      have B * beam (the model's attention does: attention.MultiHeadAttention._attend_cache). A
      leaf that is named but holds one beam's values gives wrong results.

  Returns:
    sequences int32 [B, beam, max_decode_len] (no BOS, EOS included, PAD after) and scores
    float32 [B, beam] = log p(sequence) / ((5 + length) / 6) ** length_penalty, best first.
    Slots the search could not fill (fewer possible sequences than beams) are all PAD with
    score -inf.
  """
  _check_args(cache, batch_size, max_decode_len, beam_size)
  if beam_size == 1:
    seqs, log_prob, lengths = _greedy(tokens_to_logits, cache, batch_size, max_decode_len,
                                      max_lengths, eos_id, bos_id)
    return seqs[:, None], (log_prob / length_normalizer(lengths, length_penalty))[:, None]

  B, K, L = batch_size, beam_size, max_decode_len
  limits = _limits(max_lengths, B, L)

  def extend(step, alive_seqs, alive_lp, finished_seqs, finished_scores, logits):
    """One step for [B, beams] alive hypotheses and their next-token `logits` [B, beams, vocab]:
    the new alive set (K, with each one's parent beam) and finished set."""
    beams, vocab = alive_seqs.shape[1], logits.shape[-1]
    logits, top, log_denominator = _log_softmax_parts(logits)
    # The 2K best extensions of the whole beam are among the 2K best of each of its beams: the
    # top_k runs per beam, and only over the kept ones the log-probs are formed and ranked.
    # Ties keep the order of one top_k over all beams x vocab (lower beam, then lower token).
    per_beam = min(2 * K, vocab)
    best, tokens = top_k_by_chunks(logits, per_beam)  # [B, beams, per_beam]
    best = best - top
    forced_best, forced_tokens = _forced_candidates(logits, top, per_beam, eos_id)
    force_eos = (step + 1 >= limits)[:, None, None]  # [B, 1, 1]
    best = jnp.where(force_eos, forced_best, best)
    tokens = jnp.where(force_eos, forced_tokens, tokens)
    candidates = (alive_lp[:, :, None] + (best - log_denominator)).reshape(B, beams * per_beam)
    tokens = tokens.reshape(B, beams * per_beam)
    if beams * per_beam < K:  # a vocabulary smaller than the beam: slots that stay empty
      pad = K - beams * per_beam
      candidates = jnp.pad(candidates, ((0, 0), (0, pad)), constant_values=NEG_INF)
      tokens = jnp.pad(tokens, ((0, 0), (0, pad)), constant_values=PAD_ID)

    # The 2K best extensions: [B, 2K] log-probs, parent beams, tokens, sequences.
    top_lp, top_index = lax.top_k(candidates, min(2 * K, candidates.shape[1]))
    parent = jnp.minimum(top_index // per_beam, beams - 1)
    token = jnp.take_along_axis(tokens, top_index, axis=1)
    top_seqs = jnp.take_along_axis(alive_seqs, parent[:, :, None], axis=1)
    top_seqs = lax.dynamic_update_index_in_dim(top_seqs, token, step, axis=2)
    ended = token == eos_id

    # Alive: the K best that did not end.
    alive_lp, alive_seqs, parent = _top(K, jnp.where(ended, NEG_INF, top_lp), top_seqs, parent)

    # Finished: the K best of the old finished and the ones that ended now.
    new_scores = jnp.where(ended, top_lp / length_normalizer(step + 1, length_penalty), NEG_INF)
    finished_scores, finished_seqs = _top(
        K, jnp.concatenate([finished_scores, new_scores], axis=1),
        jnp.concatenate([finished_seqs, top_seqs], axis=1))
    return alive_seqs, alive_lp, parent, finished_seqs, finished_scores

  def cond(state):
    step, _, alive_lp, _, finished_scores, _ = state
    # The best score an alive hypothesis can still reach; lp is monotonic in the length, so its
    # maximum over the reachable lengths [step + 1, limit] is at one of the ends.
    max_lp = jnp.maximum(length_normalizer(step + 1, length_penalty),
                         length_normalizer(limits, length_penalty))
    best_alive = alive_lp[:, 0] / max_lp  # [B]
    worst_finished = finished_scores[:, -1]  # -inf while fewer than K have finished
    done = (worst_finished >= best_alive) | (alive_lp[:, 0] == NEG_INF)
    return (step < L) & ~jnp.all(done)

  def body(state):
    step, alive_seqs, alive_lp, finished_seqs, finished_scores, cache = state
    logits, cache = tokens_to_logits(alive_seqs[:, :, step - 1].reshape(B * K, 1), cache)
    alive_seqs, alive_lp, parent, finished_seqs, finished_scores = extend(
        step, alive_seqs, alive_lp, finished_seqs, finished_scores, logits.reshape(B, K, -1))
    # The cache rows follow their parents.
    cache = _take_rows(cache, (jnp.arange(B)[:, None] * K + parent).reshape(B * K), per_sentence)
    return step + 1, alive_seqs, alive_lp, finished_seqs, finished_scores, cache

  # The first step: every beam would start from BOS with the same cache, so it runs once per
  # sentence, on the batch-B cache, and its K best continuations become the K beams (with
  # copies of the cache). One hypothesis is alive before it: no K copies of one token.
  logits, cache = tokens_to_logits(jnp.full((B, 1), bos_id, jnp.int32), cache)
  alive_seqs, alive_lp, _, finished_seqs, finished_scores = extend(
      jnp.int32(0), jnp.zeros((B, 1, L), jnp.int32), jnp.zeros((B, 1), jnp.float32),
      jnp.zeros((B, K, L), jnp.int32), jnp.full((B, K), NEG_INF, jnp.float32),
      logits.reshape(B, 1, -1))
  state = (jnp.int32(1), alive_seqs, alive_lp, finished_seqs, finished_scores,
           _repeat_rows(cache, K, per_sentence))
  _, _, _, finished_seqs, finished_scores, _ = lax.while_loop(cond, body, state)
  finished_seqs = jnp.where(finished_scores[:, :, None] == NEG_INF, PAD_ID, finished_seqs)
  return finished_seqs, finished_scores
