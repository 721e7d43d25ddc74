"""The optimizer (§5.3): Adam with beta1=0.9, beta2=0.98, eps=1e-9 over a learning-rate schedule.

Optional extras, each off by default: global-norm gradient clipping and decoupled weight decay
(AdamW) on the weight matrices only (parameters of two or more dimensions: embeddings and
projections; not biases nor LayerNorm scales, as nanoGPT). Gradient accumulation, which lets a
few devices reach the paper's 25,000-token batches, is done by the train step (steps.py), exactly
token-weighted; the optimizer sees one gradient per update either way.
"""

from __future__ import annotations

import jax
import optax

from transformer.training.schedules import create_schedule


def is_matrix(params):
  """True for the leaves that weight decay applies to: arrays of two or more dimensions."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def create_optimizer(*, schedule: optax.Schedule, b1: float = 0.9, b2: float = 0.98,
                     eps: float = 1e-9, weight_decay: float = 0.0,
                     grad_clip_norm: float = 0.0) -> optax.GradientTransformation:
  """Adam(W) over `schedule`, clipped as asked."""
  parts = []
  if grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(grad_clip_norm))
  if weight_decay > 0:
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                             mask=is_matrix))
  else:
    parts.append(optax.adam(schedule, b1=b1, b2=b2, eps=eps))
  return optax.chain(*parts) if len(parts) > 1 else parts[0]


def optimizer_from_config(config, d_model: int) -> optax.GradientTransformation:
  """The optimizer a run config (configs/*.py) describes."""
  schedule = create_schedule(
      config.schedule, learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
      d_model=d_model, total_steps=config.num_train_steps,
      final_fraction=config.get("final_learning_rate_fraction", 0.0))
  return create_optimizer(
      schedule=schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
      weight_decay=config.weight_decay, grad_clip_norm=config.grad_clip_norm)


def learning_rate_at(config, d_model: int, update: int) -> float:
  """The learning rate of update number `update` (0-based), for logging."""
  schedule = create_schedule(
      config.schedule, learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
      d_model=d_model, total_steps=config.num_train_steps,
      final_fraction=config.get("final_learning_rate_fraction", 0.0))
  return float(schedule(update))
