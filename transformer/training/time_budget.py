"""A run's number of steps from a wall-clock budget (`config.train_minutes`).

A schedule that ends at the last step (the cosine) must know the step count before it decays;
how many steps an hour holds depends on the machine. With `train_minutes` > 0 the trainer times
the steps of the warm-up, whose learning rates do not depend on the step count, and at the end of
it fixes the count to what the rest of the budget holds at that pace:

    total = c + floor((60 * train_minutes - spent) * (1 + budget_overplan) / seconds_per_step)

where c is the calibration step, `seconds_per_step` the mean time of this process's steps after
its first (compilation) up to step c, validations and checkpoint saves in between included, and
`spent` the time since the trainer started (data preparation and compilation included) plus the
steps that earlier processes of the same run took before a resume, counted at that pace. The
count is written to WORKDIR/train_budget.json, so a resumed run keeps its schedule (or re-derives
it from the recorded pace when `train_minutes` changed) and is deterministic from there.

The budget is also a deadline: a machine that slows down after the calibration would overrun it
with the count fixed, so at each log step (where the trainer syncs anyway) the last step that
still ends within the budget is predicted from the pace so far, and the run ends there if that
comes before the count (`last_step_in_time`; asked again at each log step, so a pace that recovers
moves the end back up). The schedule stays the one fixed; the steps cut are its last, whose rates
are near 0 on a cosine. Where the run ended is recorded too, so that running
the same command again does not train past it.

`budget_overplan` (0 = off) plans the count that fraction past what the pace at the calibration
says the budget holds, so that the deadline, not the count, ends the run: a machine that runs its
later steps faster than its warm-up (seen: 8% faster on a 2-core machine with nothing else
running) still trains to the end of the budget, and one that does not leaves the schedule's last
steps unrun (with 0.05, the last 4.8% of those after the warm-up, whose cosine rates are
under 0.6% of the peak).

This module only does the arithmetic and the record; the trainer decides when to call it.
"""

from __future__ import annotations

import json
import math
import os
import time

from transformer.files import write_atomically

# Steps timed at least (after the compiling first step) before the count is fixed.
MIN_TIMED_STEPS = 10
MIN_CALIBRATION_STEP = MIN_TIMED_STEPS + 1
RECORD = "train_budget.json"
# The most `budget_overplan` may plan past the budget: at 0.25 a steady pace cuts a cosine where its
# rate is still 10% of the peak (at 0.05, 0.6%).
MAX_OVERPLAN = 0.25


def calibration_step(warmup_steps: int) -> int:
  """The step at whose end the count is fixed: the warm-up's last (its rates are the same for any
  count), or later when the warm-up is too short to time (schedules that never depend on the
  count: "paper", "constant")."""
  return max(warmup_steps, MIN_CALIBRATION_STEP)


def steps_within(budget_s: float, *, step: int, seconds_per_step: float, spent_s: float,
                 overplan: float = 0.0) -> int:
  """The total step count: `step` plus the whole steps that `budget_s - spent_s` holds, planned
  `overplan` (a fraction) past it."""
  remaining = budget_s - spent_s
  if remaining <= 0 or seconds_per_step <= 0:
    return step
  return step + math.floor(remaining * (1.0 + overplan) / seconds_per_step)


class TimeBudget:
  """Times one process's steps and fixes the run's step count once, at `calibration_step`.

  The clock is read when the trainer starts (`__init__`), when the first step of this process has
  finished (`first_step_done`), at the calibration step (`fix_total`), and at each log step after
  it to keep the deadline (`last_step_in_time`).
  """

  def __init__(self, minutes: float, warmup_steps: int, workdir: str, clock=time.monotonic,
               overplan: float = 0.0):
    self.budget_s = 60.0 * minutes
    self.minutes = minutes
    self.overplan = overplan  # the count planned this fraction past what the budget holds
    self.at_step = calibration_step(warmup_steps)
    self.path = os.path.join(workdir, RECORD)
    self.clock = clock
    self.started = clock()
    self.first_done_time = None
    self.first_done_step = None
    self.pace = None  # seconds a step: measured here, or recorded by this run before a resume
    self.deadline = None  # the clock reading by which this process's last step must end
    self.stopped_at = None  # the step where this run ended at the deadline before, if it did
    self.record = None  # WORKDIR/train_budget.json's contents, as read or last written

  def recorded_total(self) -> tuple[int | None, str]:
    """The count this workdir's run fixed before (None if it has none yet) and a note saying how
    it was obtained; a changed budget is re-derived from the recorded pace."""
    try:
      with open(self.path, encoding="utf-8") as f:
        record = json.load(f)
      total, minutes = int(record["num_train_steps"]), float(record["train_minutes"])
      at_step, pace = int(record["calibrated_at_step"]), float(record["seconds_per_step"])
      spent = float(record["spent_seconds_at_calibration"])
      stopped = record.get("stopped_for_minutes") == self.minutes
      stopped_at = int(record["stopped_at_step"]) if stopped else None
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or cut short: calibrate again
      return None, ""
    self.record, self.pace, self.stopped_at = record, pace, stopped_at
    if minutes == self.minutes:
      return total, f"as fixed at step {at_step} for train_minutes={minutes:g} ({self.path})"
    total = steps_within(self.budget_s, step=at_step, seconds_per_step=pace, spent_s=spent,
                         overplan=self.overplan)
    return total, (f"re-derived for train_minutes={self.minutes:g} (the run fixed it for "
                   f"{minutes:g}) from the pace recorded at step {at_step}, {pace:.3f} s a step")

  def calibrates_at(self, start_step: int) -> int:
    """The step at which this process fixes the count: `at_step`, or, when it resumed too close
    to it or past it, once MIN_TIMED_STEPS steps of its own are timed."""
    return max(self.at_step, start_step + MIN_TIMED_STEPS + 1)

  def start(self, start_step: int) -> None:
    """This process resumed after `start_step` (0 if it did not): with a recorded pace, the
    deadline is set from here (the earlier steps count against the budget at that pace)."""
    if self.pace is not None:
      self.deadline = self.started + self.budget_s - start_step * self.pace

  def first_step_done(self, step: int) -> None:
    self.first_done_time, self.first_done_step = self.clock(), step

  def last_step_in_time(self, step: int, total: int) -> int:
    """The last step (at most `total`) that ends by the deadline, predicted at the end of `step`
    from the mean pace of this process's steps after its first (validations and saves included;
    the recorded pace until MIN_TIMED_STEPS are timed). `step` itself once the deadline passed."""
    if self.deadline is None:
      return total
    now = self.clock()
    timed = step - self.first_done_step if self.first_done_step is not None else 0
    pace = (now - self.first_done_time) / timed if timed >= MIN_TIMED_STEPS else self.pace
    if pace <= 0:  # no time measured (a coarse clock): nothing to predict from
      return total
    return min(total, steps_within(self.deadline, step=step, seconds_per_step=pace,
                                   spent_s=now))

  def fix_total(self, step: int, start_step: int) -> dict:
    """The record of the count fixed at the end of `step` (this process began after
    `start_step`); written to WORKDIR/train_budget.json by `write`."""
    now = self.clock()
    pace = (now - self.first_done_time) / (step - self.first_done_step)
    spent = now - self.started + start_step * pace
    total = steps_within(self.budget_s, step=step, seconds_per_step=pace, spent_s=spent,
                         overplan=self.overplan)
    self.pace = pace
    self.start(start_step)
    return {"train_minutes": self.minutes, "num_train_steps": total,
            "calibrated_at_step": step, "seconds_per_step": pace,
            "spent_seconds_at_calibration": spent, "earlier_steps": start_step,
            "overplan": self.overplan}

  def record_stop(self, step: int) -> None:
    """Adds to the record (read or written by this process) that the run ended at the deadline
    at `step`, before its count."""
    self.write({**self.record, "stopped_at_step": step, "stopped_for_minutes": self.minutes})

  def write(self, record: dict) -> None:
    write_atomically(self.path, json.dumps(record, indent=2))
    self.record = record
