"""§5.4 label smoothing: the loss equals a hand computation; padding does not count."""

import math

import jax.numpy as jnp
import numpy as np

from transformer.loss import loss_and_metrics, summarize


def hand_loss(logits, target, eps):
  """-sum_v q(v) log p(v) - H(q), q = (1-eps) onehot + eps/V, written out in plain Python."""
  vocab = len(logits)
  z = math.log(sum(math.exp(x) for x in logits))
  log_p = [x - z for x in logits]
  q = [(1 - eps) * (v == target) + eps / vocab for v in range(vocab)]
  cross = -sum(qv * lp for qv, lp in zip(q, log_p))
  entropy = -sum(qv * math.log(qv) for qv in q if qv > 0)
  return cross - entropy, -log_p[target]


def test_label_smoothed_loss_equals_hand_computation():
  logits = np.array([[[2.0, -1.0, 0.5, 0.0, 1.0],     # target 2
                      [0.1, 0.2, 0.3, 0.4, 0.5],      # target 4
                      [9.0, 9.0, 9.0, 9.0, 9.0]]],    # padding: ignored
                    np.float32)
  targets = np.array([[2, 4, 0]], np.int32)
  loss, metrics = loss_and_metrics(jnp.asarray(logits), jnp.asarray(targets), 0.1)
  (l1, n1), (l2, n2) = hand_loss(logits[0, 0], 2, 0.1), hand_loss(logits[0, 1], 4, 0.1)
  np.testing.assert_allclose(float(loss), (l1 + l2) / 2, rtol=1e-5)
  assert float(metrics["tokens"]) == 2
  np.testing.assert_allclose(float(metrics["nll_sum"]), n1 + n2, rtol=1e-5)
  assert float(metrics["correct"]) == 1  # argmax of row 1 is 4 (right), of row 0 is 0 (wrong)
  summary = summarize({k: float(v) for k, v in metrics.items()})
  np.testing.assert_allclose(summary["perplexity"], math.exp((n1 + n2) / 2), rtol=1e-5)
  assert summary["accuracy"] == 0.5


def test_no_smoothing_is_plain_cross_entropy_and_perfect_prediction_of_q_scores_zero():
  logits = jnp.array([[[3.0, 1.0, -2.0]]])
  targets = jnp.array([[1]])
  loss, metrics = loss_and_metrics(logits, targets, 0.0)
  np.testing.assert_allclose(float(loss), float(metrics["nll_sum"]), rtol=1e-6)
  eps, vocab = 0.1, 3
  q = np.full(vocab, eps / vocab)
  q[1] += 1 - eps
  loss_q, _ = loss_and_metrics(jnp.log(jnp.asarray(q))[None, None], targets, eps)
  np.testing.assert_allclose(float(loss_q), 0.0, atol=1e-6)


def test_padding_positions_change_nothing():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 4, 7)).astype(np.float32)
  targets = np.array([[3, 4, 1, 0], [5, 1, 0, 0]], np.int32)
  loss, _ = loss_and_metrics(jnp.asarray(logits), jnp.asarray(targets), 0.1)
  logits[targets == 0] = 100.0 * rng.normal(size=(3, 7))
  loss2, _ = loss_and_metrics(jnp.asarray(logits), jnp.asarray(targets), 0.1)
  np.testing.assert_allclose(float(loss), float(loss2), rtol=1e-6)
