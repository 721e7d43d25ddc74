"""The train state and the pure step functions: `train_step(state, batch) -> (state, metrics)`.

The steps know nothing of meshes: `trainer.py` jit-compiles them with shardings. Dropout keys
come from `fold_in(key(seed), state.step)`, so a resumed run draws the same masks an
uninterrupted run would have drawn.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from transformer.model import Transformer
from transformer.training.loss import loss_and_metrics

# Batch keys -> Transformer.__call__ keyword arguments.
MODEL_KWARGS = {
    "inputs_segmentation": "inputs_segmentation",
    "targets_segmentation": "targets_segmentation",
    "inputs_position": "inputs_positions",
    "targets_position": "targets_positions",
}


@flax.struct.dataclass
class TrainState:
  """step: batches consumed (micro-batches when accumulating gradients); params; opt_state."""
  step: jax.Array
  params: Any
  opt_state: Any


def model_inputs(batch: dict) -> dict:
  return {MODEL_KWARGS[k]: v for k, v in batch.items() if k in MODEL_KWARGS}


def init_state(model_config, tx: optax.GradientTransformation, rng: jax.Array,
               length: int = 8) -> TrainState:
  """Fresh parameters and optimizer state (call under jit, or jax.eval_shape for shapes)."""
  dummy = jnp.ones((1, min(length, model_config.max_len)), jnp.int32)
  model = Transformer(model_config.replace(deterministic=True))
  params = model.init(rng, dummy, dummy)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def train_step(state: TrainState, batch: dict, *, model_config, tx, label_smoothing: float,
               dropout_key: jax.Array) -> tuple[TrainState, dict]:
  """One batch: forward, §5.4 smoothed loss over non-pad tokens, backward, optimizer update."""
  model = Transformer(model_config)
  rng = jax.random.fold_in(dropout_key, state.step)

  def loss_fn(params):
    logits = model.apply({"params": params}, batch["inputs"], batch["targets"],
                         **model_inputs(batch), rngs={"dropout": rng})  # [rows, T, V]
    return loss_and_metrics(logits, batch["targets"], label_smoothing)

  (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics["source_tokens"] = jnp.sum(batch["inputs"] != 0).astype(jnp.float32)
  metrics["grad_norm"] = optax.global_norm(grads)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params, batch: dict, *, model_config, label_smoothing: float) -> dict:
  """Summable validation metrics of one batch (no dropout)."""
  model = Transformer(model_config.replace(deterministic=True))
  logits = model.apply({"params": params}, batch["inputs"], batch["targets"],
                       **model_inputs(batch))
  _, metrics = loss_and_metrics(logits, batch["targets"], label_smoothing)
  return metrics
