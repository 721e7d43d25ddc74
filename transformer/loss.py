"""The training objective (§5.4 Label Smoothing) and the metrics reported beside it.

Label smoothing with eps_ls (0.1 in the paper; Szegedy et al., 2016) replaces the one-hot target
by the mixture q = (1 - eps_ls) * onehot(y) + eps_ls / V (uniform over the whole vocabulary), and
the loss of a token is the cross entropy -sum_v q(v) log p(v). The constant entropy of q is
subtracted, so a model that predicts q exactly scores 0 (this changes no gradient). Only real
target tokens count: positions holding `PAD_ID` have weight 0.

Perplexity is exp of the plain (unsmoothed) negative log-likelihood per token.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from transformer.config import PAD_ID


def smoothed_targets_entropy(vocab_size: int, label_smoothing: float) -> float:
  """-sum_v q(v) log q(v) of the smoothed target distribution (a constant)."""
  if label_smoothing <= 0:
    return 0.0
  low = label_smoothing / vocab_size
  high = 1.0 - label_smoothing + low
  return -(high * math.log(high) + (vocab_size - 1) * low * math.log(low))


def token_losses(logits: jax.Array, targets: jax.Array, label_smoothing: float):
  """Per-token smoothed cross entropy and plain NLL.

  Args:
    logits: [rows, T, V] float (float32 recommended).
    targets: [rows, T] int ids.
    label_smoothing: eps_ls in [0, 1).
  Returns:
    (smoothed, nll), each [rows, T] float32.
  """
  vocab_size = logits.shape[-1]
  logits = logits.astype(jnp.float32)
  # log p(v) = z_v - logsumexp(z), written so that no [rows, T, V] array of log-probabilities is
  # materialised: the reductions read the logits once (they are the largest array of the step).
  normalizer = jax.nn.logsumexp(logits, axis=-1)  # [rows, T]
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = normalizer - target_logit
  if label_smoothing <= 0:
    return nll, nll
  uniform = normalizer - jnp.mean(logits, axis=-1)  # -sum_v (1/V) log p(v)
  smoothed = (1.0 - label_smoothing) * nll + label_smoothing * uniform
  smoothed = smoothed - smoothed_targets_entropy(vocab_size, label_smoothing)
  return smoothed, nll


def loss_and_metrics(logits: jax.Array, targets: jax.Array, label_smoothing: float):
  """Mean smoothed loss over non-pad tokens, and summable metrics.

  Returns:
    (loss, metrics): `loss` is the smoothed cross entropy averaged over non-pad target tokens
    (what is differentiated); `metrics` holds sums (`loss_sum`, `nll_sum`, `correct`, `tokens`)
    that add up across steps and devices; `summarize` turns them into means.
  """
  weights = (targets != PAD_ID).astype(jnp.float32)  # [rows, T]
  smoothed, nll = token_losses(logits, targets, label_smoothing)
  tokens = jnp.sum(weights)
  loss_sum = jnp.sum(smoothed * weights)
  # A token is predicted correctly when its logit is the largest (a tie counts as correct).
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  correct = jnp.sum((target_logit >= jnp.max(logits, axis=-1)) * weights)
  metrics = {"loss_sum": loss_sum, "nll_sum": jnp.sum(nll * weights), "correct": correct,
             "tokens": tokens}
  return loss_sum / jnp.maximum(tokens, 1.0), metrics


def summarize(sums: dict) -> dict:
  """Sums from `loss_and_metrics` (added over steps) -> loss, nll, accuracy, perplexity."""
  tokens = max(float(sums["tokens"]), 1.0)
  nll = float(sums["nll_sum"]) / tokens
  return {
      "loss": float(sums["loss_sum"]) / tokens,
      "nll": nll,
      "accuracy": float(sums["correct"]) / tokens,
      "perplexity": math.exp(min(nll, 700.0)),
  }
