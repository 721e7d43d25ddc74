"""The train state and the pure step functions: `train_step(state, batch) -> (state, metrics)`.

The steps know nothing of meshes (`trainer.py` jit-compiles them with shardings) nor of tasks:
`forward(params, batch, rngs)` (a task's, tasks/base.py) gives the logits that predict
`batch["targets"]`, and `batch_metrics(batch)` any extra summable metrics. Dropout keys
come from `fold_in(key(seed), state.step)`, so a resumed run draws the same masks an
uninterrupted run would have drawn.

Gradient accumulation (`grad_accum_steps = k > 1`) is exact: each call adds the gradient of the
micro-batch's *summed* token loss and its token count to `state.accum`, and every k-th call
applies the optimizer to (sum of gradients) / (sum of tokens), the gradient of the mean loss over
every non-pad token of the k micro-batches, as if they were one batch. (Averaging the k
micro-batches' mean-loss gradients, as `optax.MultiSteps` would, weights a token of a short
micro-batch more than one of a long micro-batch.)
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from transformer import models
from transformer.loss import loss_and_metrics


@flax.struct.dataclass
class TrainState:
  """step: batches consumed (micro-batches when accumulating gradients); params; opt_state;
  accum: None, or when accumulating {"grads": summed-loss gradients, "tokens": their count}
  since the last update (zeros after every k-th micro-batch, so in every checkpoint)."""
  step: jax.Array
  params: Any
  opt_state: Any
  accum: Any = None


def _zero_accum(params) -> dict:
  return {"grads": jax.tree.map(jnp.zeros_like, params), "tokens": jnp.zeros((), jnp.float32)}


def init_state(model_config, tx: optax.GradientTransformation, rng: jax.Array,
               length: int = 8, grad_accum_steps: int = 1) -> TrainState:
  """Fresh parameters and optimizer state (call under jit, or jax.eval_shape for shapes)."""
  params = models.init_params(model_config, rng, length)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    accum=_zero_accum(params) if grad_accum_steps > 1 else None)


def _optax_states(tree) -> list:
  """The optax state objects (NamedTuples such as ScaleByAdamState, EmptyState) in `tree`."""
  found = []

  def walk(node):
    if isinstance(node, tuple) and hasattr(node, "_fields"):
      found.append(node)
    elif isinstance(node, (tuple, list)):
      for child in node:
        walk(child)

  walk(tree)
  return found


def convert_state(old: TrainState, tx: optax.GradientTransformation,
                  grad_accum_steps: int = 1) -> TrainState:
  """A checkpoint's state for another optimizer wrapping or accumulation setting.

  Sound for what checkpointing.STATE_SETTINGS names: gradient clipping and weight decay add or
  remove stateless links of the optax chain, so each optax state object of the new chain
  (Adam's count and moments, the schedule's count) is taken from the old state by type, in
  order, and only stateless ones are made fresh; the accumulation buffer is all zeros at every
  checkpoint (saves follow complete updates), so it is made or dropped.
  """
  fresh = tx.init(old.params)
  pool = _optax_states(old.opt_state)

  def take(node):
    if isinstance(node, tuple) and hasattr(node, "_fields"):
      for i, candidate in enumerate(pool):
        if type(candidate) is type(node):
          return pool.pop(i)
      if jax.tree.leaves(node):
        raise ValueError(f"The checkpoint has no {type(node).__name__} to convert from.")
      return node
    if isinstance(node, (tuple, list)):
      return type(node)(take(child) for child in node)
    return node

  accum = _zero_accum(old.params) if grad_accum_steps > 1 else None
  return old.replace(opt_state=take(fresh), accum=accum)


def train_step(state: TrainState, batch: dict, *, forward: Callable, tx,
               label_smoothing: float, dropout_key: jax.Array, grad_accum_steps: int = 1,
               batch_metrics: Callable[[dict], dict] | None = None) -> tuple[TrainState, dict]:
  """One batch: forward, §5.4 smoothed loss over non-pad tokens, backward, optimizer update.

  With `grad_accum_steps = k > 1` the update happens on every k-th call, from the gradient of
  the mean loss over all tokens of the k batches (see the module docstring).
  """
  rng = jax.random.fold_in(dropout_key, state.step)
  accumulate = grad_accum_steps > 1

  def loss_fn(params):
    logits = forward(params, batch, rngs={"dropout": rng})  # [rows, T, V]
    loss, metrics = loss_and_metrics(logits, batch["targets"], label_smoothing)
    return (metrics["loss_sum"] if accumulate else loss), metrics

  def apply(grads):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), opt_state

  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if batch_metrics is not None:
    metrics.update(batch_metrics(batch))
  if not accumulate:
    params, opt_state = apply(grads)
    metrics["grad_norm"] = optax.global_norm(grads)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  metrics["grad_norm"] = optax.global_norm(grads) / jnp.maximum(metrics["tokens"], 1.0)
  accum = {"grads": jax.tree.map(jnp.add, state.accum["grads"], grads),
           "tokens": state.accum["tokens"] + metrics["tokens"]}

  def update(_):
    params, opt_state = apply(
        jax.tree.map(lambda g: g / jnp.maximum(accum["tokens"], 1.0), accum["grads"]))
    return params, opt_state, _zero_accum(state.params)

  def wait(_):
    return state.params, state.opt_state, accum

  is_update = (state.step + 1) % grad_accum_steps == 0
  params, opt_state, accum = jax.lax.cond(is_update, update, wait, None)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                       accum=accum), metrics


def eval_step(params, batch: dict, *, forward: Callable, label_smoothing: float) -> dict:
  """Summable validation metrics of one batch (`forward` of a deterministic model config)."""
  logits = forward(params, batch)
  _, metrics = loss_and_metrics(logits, batch["targets"], label_smoothing)
  return metrics
