"""§5.3: the paper's learning-rate schedule, the others, and the optimizer around them."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer.training.optimizer import create_optimizer
from transformer.training.schedules import create_schedule, paper_schedule


def paper_formula(step_num, d_model=512, warmup=4000):
  return d_model**-0.5 * min(step_num**-0.5, step_num * warmup**-1.5)


@pytest.mark.parametrize("step_num", [1, 10, 1000, 3999, 4000, 4001, 10_000, 100_000])
def test_paper_schedule_equals_the_formula(step_num):
  schedule = paper_schedule(512, 4000)
  # Optax count c is the paper's step_num c + 1.
  np.testing.assert_allclose(float(schedule(step_num - 1)), paper_formula(step_num), rtol=1e-6)


def test_paper_schedule_peaks_at_warmup_and_scales():
  schedule = paper_schedule(512, 4000, scale=2.0)
  values = np.array([float(schedule(c)) for c in (3998, 3999, 4000)])
  assert values[1] == values.max()
  np.testing.assert_allclose(values[1], 2.0 * 512**-0.5 * 4000**-0.5, rtol=1e-6)


def test_cosine_and_constant():
  cosine = create_schedule("cosine", learning_rate=1e-3, warmup_steps=10, d_model=8,
                           total_steps=110)
  np.testing.assert_allclose(float(cosine(0)), 0.0)
  np.testing.assert_allclose(float(cosine(10)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(float(cosine(60)), 0.5e-3, rtol=1e-4)
  assert float(cosine(110)) < 1e-9
  constant = create_schedule("constant", learning_rate=3e-4, warmup_steps=0, d_model=8,
                             total_steps=5)
  assert float(constant(123)) == pytest.approx(3e-4)
  with pytest.raises(ValueError, match="schedule='linear' is unknown"):
    create_schedule("linear", learning_rate=1.0, warmup_steps=1, d_model=8, total_steps=5)


def test_adam_uses_the_papers_betas_and_eps():
  tx = create_optimizer(schedule=optax.constant_schedule(0.1))
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.array([1.0, -2.0, 0.0])}
  updates, _ = tx.update(grads, tx.init(params), params)
  # First Adam step: m_hat = g, v_hat = g^2, update = -lr g / (|g| + eps).
  np.testing.assert_allclose(updates["w"], [-0.1, 0.1, 0.0], atol=1e-6)


def test_clipping_comes_before_adam():
  sched = optax.constant_schedule(0.1)
  tx = create_optimizer(schedule=sched, grad_clip_norm=1.0)
  reference = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adam(sched, b1=0.9, b2=0.98, eps=1e-9))
  params = {"w": jnp.zeros(2)}
  grads = {"w": jnp.array([3.0, 4.0])}
  state, ref_state = tx.init(params), reference.init(params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    ref_updates, ref_state = reference.update(grads, ref_state, params)
    np.testing.assert_allclose(updates["w"], ref_updates["w"], rtol=1e-6)
    grads = {"w": grads["w"] * 0.5}
