"""How many steps the training loop runs: `config.num_train_steps`, or what `train_minutes` holds.

`run_length(config, workdir, clock)` gives the loop one object to ask. Without a time budget it
is `FixedSteps`: the configured count, never changed. With `train_minutes` > 0 it is
`BudgetedSteps`, which keeps time_budget.py's arithmetic in step with the loop:

- before the optimizer is built, a count this run fixed before (WORKDIR/train_budget.json) gives
  `config` its schedule's length, so a resumed run trains the same schedule;
- otherwise the loop runs to the calibration step, where the count is fixed (and the loop
  compiles the step again for the schedule of that length);
- at each log step after it the deadline moves where the loop ends (below the count when the
  pace so far would overrun the budget, back up when it recovers), not the schedule;
- a run that ended at the deadline records it, so the same command does not train past it.

With several processes the count and each deadline's last step are process 0's, broadcast (every
host must run the same number of steps, or the collectives of the next one would hang).
"""

from __future__ import annotations

import jax
from absl import logging

from transformer.training.sharding import from_process_0
from transformer.training.time_budget import TimeBudget


def run_length(config, workdir: str, clock) -> FixedSteps:
  """The step count of `config` in `workdir`, with its time budget if it has one."""
  if config.get("train_minutes", 0.0):
    return BudgetedSteps(config, workdir, clock)
  return FixedSteps(config)


def with_total_steps(config, total: int):
  """A copy of `config` that trains for `total` steps (the count a time budget fixed)."""
  config = config.copy_and_resolve_references()
  config.num_train_steps = total
  return config


class FixedSteps:
  """`config.num_train_steps` steps (no time budget).

  Attributes:
    config: the run config; its `num_train_steps` is the schedule's length.
    num_steps: the step at which the loop ends.
  """

  def __init__(self, config):
    self.config = config
    self.num_steps = config.num_train_steps

  def start(self, start_step: int) -> None:
    """The run resumed after `start_step` (0 if it did not)."""

  def first_step_done(self, step: int) -> None:
    """This process's first (compiling) step, `step`, has finished."""

  def after_step(self, step: int, outputs) -> bool:
    """Whether `num_steps` (and perhaps `config`) changed at the end of `step`, whose outputs
    (not yet fetched) are `outputs`."""
    del step, outputs
    return False

  def finish(self) -> None:
    """The loop ended at `num_steps` (not stopped by a signal)."""


class BudgetedSteps(FixedSteps):
  """The steps that `config.train_minutes` holds (time_budget.py), as the loop runs them."""

  def __init__(self, config, workdir: str, clock):
    super().__init__(config)
    self.budget = TimeBudget(config.train_minutes, config.warmup_steps, workdir, clock,
                             overplan=config.get("budget_overplan", 0.0))
    self.calibrate_at = None
    self.start_step = 0
    self.logged_end = None  # the last end the deadline logged
    total, how = self.budget.recorded_total()
    if total is not None:  # fixed by this run before a resume: the same schedule
      logging.info("Time budget: %d steps, %s.", total, how)
      self.config = with_total_steps(config, total)
      self.num_steps = total

  def start(self, start_step: int) -> None:
    self.start_step = start_step
    self.budget.start(start_step)
    if self.budget.stopped_at is not None:
      self.num_steps = min(self.num_steps, self.budget.stopped_at)
      logging.info("Time budget: this run ended at step %d, where train_minutes=%g was spent (a "
                   "larger train_minutes trains on).", self.num_steps, self.budget.minutes)
    if self.budget.pace is None:  # no count recorded: to the calibration step, then to the count
      self.calibrate_at = self.budget.calibrates_at(start_step)
      self.num_steps = self.calibrate_at
      logging.info("Time budget: train_minutes=%g; the step count is fixed at step %d from the "
                   "pace of the steps before it.", self.budget.minutes, self.calibrate_at)

  def first_step_done(self, step: int) -> None:
    self.budget.first_step_done(step)

  def after_step(self, step: int, outputs) -> bool:
    if step == self.calibrate_at:
      jax.block_until_ready(outputs)
      self._fix_total(step)
      return True
    if (self.budget.deadline is None or step >= self.num_steps
        or step % self.config.log_every_steps):
      return False
    jax.block_until_ready(outputs)  # the step has run: the clock reads its end, not its dispatch
    # Against the count, not the last prediction: a pace that recovers from a slow stretch (other
    # jobs on the machine) moves the end back up, to the count at most.
    total = self.config.num_train_steps
    last = from_process_0(self.budget.last_step_in_time(step, total))
    if last == self.num_steps:
      return False
    self._log_end(last, total)
    self.num_steps = last
    return True

  def _log_end(self, last: int, total: int) -> None:
    """Logs where the deadline puts the end: the first time it cuts the count, when it moves
    back to the count, and in between when it moves by 1% of the count (not at every log step,
    which a pace measured to the second moves by a step or two)."""
    logged = self.logged_end
    if last < total and (logged is None or logged == total
                         or abs(last - logged) >= max(1, total // 100)):
      logging.info("Time budget: at the pace so far, step %d is the last to end within "
                   "train_minutes=%g; the run ends there (the schedule stays the one of %d "
                   "steps).", last, self.budget.minutes, total)
      self.logged_end = last
    elif last == total and logged is not None:
      logging.info("Time budget: at the pace so far the count's last step, %d, ends within "
                   "train_minutes=%g again.", total, self.budget.minutes)
      self.logged_end = last

  def _fix_total(self, step: int) -> None:
    """The count the budget holds at the end of `step`; process 0 records it in the workdir."""
    record = self.budget.fix_total(step, self.start_step)
    total = record["num_train_steps"] = from_process_0(record["num_train_steps"])
    if jax.process_index() == 0:
      self.budget.write(record)
    overplan = (f"; planned {100 * self.budget.overplan:g}% past the budget "
                f"(budget_overplan), the deadline ends the run within it"
                if self.budget.overplan else "")
    logging.info("Time budget: %d steps (fixed at step %d: %.3f s a step, %.0f of %.0f s "
                 "spent%s).", total, step, record["seconds_per_step"],
                 record["spent_seconds_at_calibration"], self.budget.budget_s, overplan)
    if total == step:
      logging.warning("The budget train_minutes=%g was spent by step %d, where the step count is "
                      "fixed; training stops there.", self.budget.minutes, step)
    self.config, self.num_steps = with_total_steps(self.config, total), total
    self.calibrate_at = None

  def finish(self) -> None:
    if self.num_steps < self.config.num_train_steps and jax.process_index() == 0:
      self.budget.record_stop(self.num_steps)

