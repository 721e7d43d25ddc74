"""Gradient accumulation is exact: k micro-batches update the model as their concatenation would."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from transformer.config import tiny
from transformer.models import batch_forward
from transformer.training.steps import init_state, train_step

ROWS, LENGTH, VOCAB = 4, 8, 32


def _batch(rng, real_lengths):
  """Rows of random tokens, each followed by PAD up to LENGTH; the targets reverse them."""
  tokens = rng.integers(4, VOCAB, size=(len(real_lengths), LENGTH)).astype(np.int32)
  targets = np.zeros_like(tokens)
  for row, n in enumerate(real_lengths):
    tokens[row, n:] = 0
    targets[row, :n] = tokens[row, :n][::-1]
  return {"inputs": tokens, "targets": targets}


def _run(batches, grad_accum_steps, tx):
  model_config = tiny(vocab_size=VOCAB, max_length=LENGTH, dropout_rate=0.0)
  state = init_state(model_config, tx, jax.random.PRNGKey(0), grad_accum_steps=grad_accum_steps)
  step = jax.jit(functools.partial(
      train_step, forward=batch_forward(model_config), tx=tx, label_smoothing=0.1,
      dropout_key=jax.random.PRNGKey(1), grad_accum_steps=grad_accum_steps))
  states = []
  for batch in batches:
    state, _ = step(state, batch)
    states.append(state)
  return states


def test_two_micro_batches_of_different_sizes_equal_their_concatenation():
  rng = np.random.default_rng(0)
  short = _batch(rng, [2, 1, 3, 2])      # 8 target tokens
  long = _batch(rng, [8, 7, 8, 6])       # 29 target tokens
  whole = {k: np.concatenate([short[k], long[k]]) for k in short}
  tx = optax.sgd(1.0)  # plain SGD: the update is the gradient itself

  (one,) = _run([whole], 1, tx)
  first, second = _run([short, long], 2, tx)

  # No update after the first micro-batch; its gradient and tokens wait in state.accum.
  fresh = init_state(tiny(vocab_size=VOCAB, max_length=LENGTH, dropout_rate=0.0), tx,
                     jax.random.PRNGKey(0), grad_accum_steps=2)
  jax.tree.map(np.testing.assert_array_equal, first.params, fresh.params)
  assert float(first.accum["tokens"]) == 8.0
  # After the second, the update equals the concatenated batch's, and the accumulator is empty.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               second.params, one.params)
  assert float(second.accum["tokens"]) == 0.0
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(second.accum["grads"]))
  assert int(second.step) == 2

  # The mean of the two micro-batches' mean-loss gradients (optax.MultiSteps) is another update.
  _, ms_second = _run([short, long], 1, optax.MultiSteps(tx, every_k_schedule=2))
  differences = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                                             ms_second.params, one.params))
  assert max(differences) > 1e-3
