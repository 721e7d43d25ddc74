"""config.train_minutes: the step count fixed at the end of the warm-up from the measured pace."""

import json
import re

import numpy as np
import pytest
from absl import logging

from transformer.training import synthetic, time_budget, trainer
from transformer.training.run_length import BudgetedSteps
from transformer.training.smoke import tiny_run_config
from transformer.training.time_budget import MIN_TIMED_STEPS, TimeBudget
from transformer.training.writers import read_metrics

VOCAB, ROWS, LENGTH = 48, 8, 12


class FakeClock:
  """Returns the given times in turn, then the last one again (the budget reads the clock at known
  points only: start, first step, calibration, then each log step)."""

  def __init__(self, *times):
    self.times = list(times)

  def __call__(self):
    return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def _data():
  return trainer.TrainingData(
      vocab_size=VOCAB,
      train_iter=synthetic.make_train_iterator(rows=ROWS, length=LENGTH, vocab_size=VOCAB),
      eval_batches=[])


def _assert_trained_as_the_fixed_count(config, budget_dir, fixed_dir, total: int, last: int):
  """The budgeted run in `budget_dir` logged steps 1..`last` with the learning rates and losses
  of a run of `config` with `num_train_steps` = `total` and no budget (trained in `fixed_dir`).
  Returns the budgeted run's train metrics."""
  fixed = config.copy_and_resolve_references()
  fixed.train_minutes, fixed.num_train_steps = 0.0, total
  trainer.train_and_evaluate(fixed, str(fixed_dir), data=_data())
  with_budget = read_metrics(str(budget_dir), "train")
  with_count = read_metrics(str(fixed_dir), "train")
  assert [r["step"] for r in with_budget] == list(range(1, last + 1))
  for key in ("learning_rate", "loss"):
    np.testing.assert_allclose([r[key] for r in with_budget], [r[key] for r in with_count[:last]],
                               rtol=1e-6, err_msg=key)
  return with_budget


def _budget_config(overplan: float = 0.0):
  """A one-minute budget (the count fixed at step 11) on a cosine schedule."""
  config = tiny_run_config(steps=500, checkpoint_every=1000)  # 500: planned, replaced
  config.schedule, config.learning_rate, config.warmup_steps = "cosine", 0.01, 11
  config.train_minutes, config.budget_overplan = 1.0, overplan
  return config


def _train_budgeted(config, workdir, *after: float) -> tuple[int, dict]:
  """Trains `config` in `workdir` on a clock that reads 0 s at the start, 30 s after the first
  step and 40 s at the calibration (1 s a step), then `after` at each log step; returns the last
  step and the budget's record."""
  state = trainer.train_and_evaluate(config, str(workdir), data=_data(),
                                     clock=FakeClock(0.0, 30.0, 40.0, *after))
  return int(state.step), json.loads((workdir / time_budget.RECORD).read_text())


@pytest.mark.parametrize("started, first_done, calibrated, earlier", [
    (0.0, 25.0, 145.0, 0), (0.0, 3.0, 23.0, 0), (0.0, 30.0, 50.0, 40)])
def test_the_steps_fixed_fill_the_budget_and_no_more(tmp_path, started, first_done, calibrated,
                                                     earlier):
  """With the pace of the timed steps, the steps after the calibration end within the budget and
  one more would not; steps an earlier process took count against it at the same pace."""
  budget = TimeBudget(10.0, warmup_steps=0, workdir=str(tmp_path),
                      clock=FakeClock(started, first_done, calibrated))
  at = budget.calibrates_at(earlier)
  assert at == max(MIN_TIMED_STEPS + 1, earlier + MIN_TIMED_STEPS + 1)
  budget.first_step_done(earlier + 1)
  record = budget.fix_total(at, earlier)
  pace = (calibrated - first_done) / (at - earlier - 1)
  assert record["seconds_per_step"] == pytest.approx(pace)
  after = record["num_train_steps"] - at
  used = calibrated - started + earlier * pace  # this process's time, and the earlier steps'
  assert used + after * pace <= 600.0 < used + (after + 1) * pace
  assert record["spent_seconds_at_calibration"] == pytest.approx(used)


def test_an_overplanned_count_is_planned_that_fraction_past_the_budget(tmp_path):
  """10 timed steps of 12 s, 145 of 600 s spent at step 11: 455 s hold 37 more steps; planned 20%
  past them, 546 s hold 45. The record says how the count was planned."""
  counts = {}
  for overplan in (0.0, 0.2):
    budget = TimeBudget(10.0, warmup_steps=0, workdir=str(tmp_path / str(overplan)),
                        clock=FakeClock(0.0, 25.0, 145.0), overplan=overplan)
    budget.first_step_done(1)
    record = budget.fix_total(11, 0)
    counts[overplan] = record["num_train_steps"]
    assert record["overplan"] == overplan
  assert counts == {0.0: 11 + 37, 0.2: 11 + 45}


def test_a_budget_spent_before_the_calibration_stops_there(tmp_path):
  budget = TimeBudget(1.0, warmup_steps=100, workdir=str(tmp_path),
                      clock=FakeClock(0.0, 10.0, 70.0))
  budget.first_step_done(1)
  assert budget.fix_total(100, 0)["num_train_steps"] == 100


def test_the_record_is_reread_and_a_changed_budget_rederived_from_its_pace(tmp_path):
  budget = TimeBudget(5.0, warmup_steps=50, workdir=str(tmp_path),
                      clock=FakeClock(0.0, 10.0, 59.0))
  assert budget.recorded_total() == (None, "")
  budget.first_step_done(1)
  record = budget.fix_total(50, 0)  # 1 s a step, 59 s spent: 241 more steps in 300 s
  budget.write(record)
  same, how = TimeBudget(5.0, 50, str(tmp_path), clock=lambda: 0.0).recorded_total()
  assert same == record["num_train_steps"] and "as fixed at step 50" in how
  doubled, how = TimeBudget(10.0, 50, str(tmp_path), clock=lambda: 0.0).recorded_total()
  assert doubled - 50 == pytest.approx(2 * (same - 50) + 59, abs=1)  # 600 s - 59 s at 1 s a step
  assert "re-derived for train_minutes=10" in how and "1.000 s a step" in how
  (tmp_path / time_budget.RECORD).write_text('{"num_train_steps": 3')  # cut short: calibrate again
  assert TimeBudget(5.0, 50, str(tmp_path)).recorded_total() == (None, "")


def test_a_budget_run_is_the_run_of_the_count_it_fixed_and_keeps_it_on_resume(tmp_path):
  """The trainer times the warm-up, fixes the count (here 11 + 20 steps: 1 s a step, 40 of 60 s
  spent) and trains exactly the run that `num_train_steps` = that count would have trained: the
  same cosine learning rates and losses at every step. Resuming keeps the count."""
  config, budget_dir = _budget_config(), tmp_path / "budget"
  last, record = _train_budgeted(config, budget_dir)
  assert last == 31
  assert record["num_train_steps"] == 31 and record["calibrated_at_step"] == 11
  assert record["seconds_per_step"] == pytest.approx(1.0)

  with_budget = _assert_trained_as_the_fixed_count(config, budget_dir, tmp_path / "fixed", 31, 31)
  assert with_budget[-1]["learning_rate"] < 0.01 * config.learning_rate  # the cosine's end

  resumed = trainer.train_and_evaluate(config, str(budget_dir), data=_data(), clock=lambda: 1e9)
  assert int(resumed.step) == 31


def test_a_machine_slower_after_the_calibration_ends_the_run_at_the_deadline(tmp_path):
  """Calibrated at 1 s a step (31 steps in 60 s), the steps then take 2 s each: step k ends at
  40 + 2 (k - 11) s, so step 21 is the last to end within the budget. The run ends there, on the
  schedule of 31 steps (the same rates and losses as the run of 31 steps, to step 21), records
  it, and the same command trains nothing more; a larger budget trains on."""
  config, budget_dir = _budget_config(), tmp_path / "budget"
  slower = [40.0 + 2.0 * (k - 11) for k in range(12, 40)]  # read at each log step after 11
  last, record = _train_budgeted(config, budget_dir, *slower)
  assert last == 21
  assert record["num_train_steps"] == 31 and record["stopped_at_step"] == 21

  _assert_trained_as_the_fixed_count(config, budget_dir, tmp_path / "fixed", 31, 21)

  again = trainer.train_and_evaluate(config, str(budget_dir), data=_data(), clock=lambda: 1e9)
  assert int(again.step) == 21
  config.train_minutes = 2.0  # re-derived from the recorded pace: 11 + (120 - 40) / 1 steps
  more = trainer.train_and_evaluate(config, str(budget_dir), data=_data(), clock=lambda: 1e9)
  assert int(more.step) == 91


def test_a_slow_stretch_after_the_calibration_cuts_the_run_only_while_it_lasts(tmp_path):
  """Calibrated at 1 s a step (31 steps in 60 s), steps 12 to 15 take 3 s each (another job on
  the machine), the rest 0.5 s. The mean pace after step 15 (22 s over 14 steps) would end the run
  at step 20; as the pace recovers the end moves back up: at step 27 (58 s) the mean pace, 28 s
  over 26 steps, holds one more step in the minute, so the run ends at 28 (at 58.5 s). Same
  schedule of 31 steps, the same rates and losses as its run to there."""
  config, budget_dir = _budget_config(), tmp_path / "budget"
  slow = [40.0 + 3.0 * (k - 11) for k in range(12, 16)]
  recovered = [52.0 + 0.5 * (k - 15) for k in range(16, 40)]
  last, record = _train_budgeted(config, budget_dir, *slow, *recovered)
  assert last == 28
  assert record["num_train_steps"] == 31 and record["stopped_at_step"] == 28
  _assert_trained_as_the_fixed_count(config, budget_dir, tmp_path / "fixed", 31, 28)


def test_an_overplanned_count_on_a_steady_machine_ends_at_the_deadline(tmp_path):
  """Calibrated at 1 s a step with 40 of 60 s spent, planned 20% past the 20 steps left: a
  schedule of 11 + 24 = 35 steps. The steps stay at 1 s, so step 31 is the last to end within
  the minute: the run ends there, on the schedule of 35 (its rates and losses), and records it."""
  config, budget_dir = _budget_config(0.2), tmp_path / "budget"
  last, record = _train_budgeted(config, budget_dir, *[40.0 + (k - 11) for k in range(12, 40)])
  assert last == 31
  assert record["num_train_steps"] == 35 and record["stopped_at_step"] == 31
  _assert_trained_as_the_fixed_count(config, budget_dir, tmp_path / "fixed", 35, 31)


@pytest.mark.parametrize("overplan, last", [(0.0, 31), (0.2, 35)])
def test_a_machine_faster_after_the_calibration_trains_to_the_budget_when_overplanned(
    tmp_path, overplan, last):
  """Calibrated at 1 s a step (20 steps left in the minute at step 11), the steps then take 0.8 s:
  the count fixed without overplan, 31, ends at 56 s, 4 s of the budget unused; planned 20% past
  it (35) the deadline first cuts the run to 31 and moves back to 35 as the pace shows the
  speed-up, and step 35 ends at 59.2 s."""
  faster = [40.0 + 0.8 * (k - 11) for k in range(12, 40)]
  ended, record = _train_budgeted(_budget_config(overplan), tmp_path, *faster)
  assert ended == last and faster[last - 12] <= 60.0
  assert "stopped_at_step" not in record


def test_the_deadline_logs_where_the_end_moves_not_each_step_of_it(tmp_path, caplog):
  """The end is logged when the deadline first cuts the count, when it moves by 1% of the count
  or more, and when it moves back to the count; not when a log step moves it by a step."""
  steps = BudgetedSteps(_budget_config(0.05), str(tmp_path), clock=lambda: 0.0)
  logging.get_absl_handler()  # absl's logger propagates to caplog
  with caplog.at_level("INFO"):
    for last in (3033, 3036, 3034, 2990, 2995, 3072, 3050):
      steps._log_end(last, 3072)
  logged = [re.search(r"step (\d+) is the last|count's last step, (\d+), ends", r.getMessage())
            for r in caplog.records if "Time budget" in r.getMessage()]
  assert [(m[0].startswith("count"), int(m[1] or m[2])) for m in logged] == [
      (False, 3033), (False, 2990), (True, 3072), (False, 3050)]
