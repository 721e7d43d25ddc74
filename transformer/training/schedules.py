"""Learning-rate schedules as Optax schedules (§5.3 Optimizer).

The paper's schedule (eq. 3):

    lrate = d_model^-0.5 * min(step_num^-0.5, step_num * warmup_steps^-1.5)

rises linearly for `warmup_steps` and then decays as the inverse square root of the step. Optax
counts updates from 0; the paper's `step_num` counts them from 1, so the schedule evaluated at
Optax count `c` is the paper's value at `step_num = c + 1` (the first update is not wasted at 0).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

SCHEDULES = ("paper", "cosine", "constant")


def paper_schedule(d_model: int, warmup_steps: int, scale: float = 1.0) -> optax.Schedule:
  """§5.3, eq. 3, times `scale` (1.0 is the paper's)."""
  if warmup_steps < 1:
    raise ValueError(f"warmup_steps={warmup_steps} must be at least 1 for the paper's schedule.")

  def schedule(count):
    step = jnp.asarray(count, jnp.float32) + 1.0  # the paper's step_num starts at 1
    return scale * d_model**-0.5 * jnp.minimum(step**-0.5, step * warmup_steps**-1.5)

  return schedule


def cosine_schedule(peak: float, warmup_steps: int, total_steps: int,
                    final_fraction: float = 0.0) -> optax.Schedule:
  """Linear warmup from 0 to `peak`, then cosine decay to `final_fraction * peak` at
  `total_steps` (nanoGPT's recipe decays to a tenth of the peak)."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1), end_value=final_fraction * peak)


def create_schedule(name: str, *, learning_rate: float, warmup_steps: int, d_model: int,
                    total_steps: int, final_fraction: float = 0.0) -> optax.Schedule:
  """The schedule named by `config.schedule`.

  "paper": `learning_rate` multiplies the paper's d_model^-0.5 schedule (1.0 = the paper).
  "cosine", "constant": `learning_rate` is the peak value; "cosine" ends at
  `final_fraction * learning_rate`.
  """
  if name == "paper":
    return paper_schedule(d_model, warmup_steps, learning_rate)
  if name == "cosine":
    return cosine_schedule(learning_rate, warmup_steps, total_steps, final_fraction)
  if name == "constant":
    return optax.constant_schedule(learning_rate)
  raise ValueError(f"schedule={name!r} is unknown; allowed: {', '.join(SCHEDULES)}.")
