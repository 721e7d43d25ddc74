"""train_and_evaluate in this process: a tiny model on a synthetic copy task."""

import json
import os

import numpy as np
import pytest

from transformer.config import TransformerConfig
from transformer.training import checkpointing, synthetic, trainer
from transformer.training.checkpointing import ModelMismatchError
from transformer.training.smoke import tiny_run_config
from transformer.training.workdir_lock import WorkdirBusyError, WorkdirLock
from transformer.training.writers import read_metrics

VOCAB, ROWS, LENGTH = 48, 8, 12


def _data(eval_batches=1):
  return trainer.TrainingData(
      vocab_size=VOCAB,
      train_iter=synthetic.make_train_iterator(rows=ROWS, length=LENGTH, vocab_size=VOCAB),
      eval_batches=synthetic.make_eval_batches(num_batches=eval_batches, rows=ROWS,
                                               length=LENGTH, vocab_size=VOCAB))


def test_a_few_steps_lower_the_loss_and_write_what_users_read(tmp_path):
  config = tiny_run_config(steps=30, checkpoint_every=10)
  config.model.dropout_rate = 0.0
  config.eval_every_steps = 15
  workdir = str(tmp_path)
  state = trainer.train_and_evaluate(config, workdir, data=_data())
  assert int(state.step) == 30

  train = read_metrics(workdir, "train")
  assert [r["step"] for r in train] == list(range(1, 31))
  first, last = np.mean([r["loss"] for r in train[:3]]), np.mean([r["loss"] for r in train[-3:]])
  assert last < first - 0.3, (first, last)
  for key in ("loss", "nll", "accuracy", "perplexity", "learning_rate", "tokens_per_sec"):
    assert key in train[-1]
  evals = read_metrics(workdir, "eval")
  assert [r["step"] for r in evals] == [15, 30]
  assert all(np.isfinite(r["nll"]) and 0 <= r["accuracy"] <= 1 for r in evals)

  assert os.listdir(os.path.join(workdir, "tensorboard"))[0].startswith("events.out.tfevents")
  with open(os.path.join(workdir, "config.json")) as f:
    resolved = json.load(f)
  assert resolved["model"]["vocab_size"] == VOCAB and resolved["model"]["max_length"] == LENGTH
  assert resolved["config"]["num_train_steps"] == 30
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))) == [10, 20, 30]

  # Resuming a finished run does nothing but load it; another model shape is refused plainly.
  config.model.d_model = 64
  with pytest.raises(ModelMismatchError, match=r"d_model: checkpoint 32, this config 64"):
    trainer.train_and_evaluate(config, workdir, data=_data())
  # So is a change of which parameters exist; the checkpoints stay where they were.
  config.model.d_model = 32
  bias = config.model.attention_bias
  for key, value, message in (("attention_bias", not bias, f"attention_bias: checkpoint {bias}"),
                              ("scan_layers", True, "scan_layers: checkpoint False"),
                              ("norm_order", "pre", "norm_order: checkpoint 'post'")):
    changed = config.copy_and_resolve_references()
    changed.model[key] = value
    with pytest.raises(ModelMismatchError, match=message):
      trainer.train_and_evaluate(changed, workdir, data=_data())
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))) == [10, 20, 30]
  assert not os.path.exists(os.path.join(workdir, "checkpoints_broken"))


def test_checkpoints_from_before_attention_bias_are_refused_not_set_aside(tmp_path):
  """A checkpoint written before `attention_bias` existed holds attention biases: resuming it
  with today's default (no biases) is refused with the setting named, never discarded."""
  saved = {"vocab_size": 48, "d_model": 32}  # an old checkpoint's model JSON: no attention_bias
  with pytest.raises(ModelMismatchError,
                     match="attention_bias: checkpoint True, this config False"):
    checkpointing.check_same_shape(saved, TransformerConfig(vocab_size=48, d_model=32, num_heads=4),
                                   str(tmp_path), 7)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  config = tiny_run_config(steps=10, checkpoint_every=1)
  config.learning_rate = 1e30  # the first update blows the parameters up
  config.schedule = "constant"
  with pytest.raises(FloatingPointError) as error:
    trainer.train_and_evaluate(config, str(tmp_path), data=_data(eval_batches=0))
  message = str(error.value)
  assert "at step 2" in message or "by step 1" in message, message
  steps = sorted(int(s) for s in os.listdir(os.path.join(str(tmp_path), "checkpoints")))
  assert max(steps, default=0) <= 1
  if steps:
    assert ("last good checkpoint (parameters checked finite when saved) "
            f"is step {steps[-1]}" in message)
  else:  # diverged before any checkpoint: said so, not "step None"
    assert "No checkpoint was written before this" in message and "None" not in message


def test_gradient_accumulation_reads_k_batches_per_step(tmp_path):
  config = tiny_run_config(steps=2, checkpoint_every=0, grad_accum_steps=3)
  data = _data(eval_batches=0)
  state = trainer.train_and_evaluate(config, str(tmp_path), data=data)
  assert int(state.step) == 6  # batches consumed
  assert data.train_iter.get_state()["next_index"] == 6
  assert [r["step"] for r in read_metrics(str(tmp_path), "train")] == [1, 2]


def test_at_most_two_steps_are_in_flight(monkeypatch):
  waited = []
  monkeypatch.setattr(trainer.jax, "block_until_ready", waited.append)
  buffer = trainer._MetricsBuffer(max_in_flight=2)  # pylint: disable=protected-access
  for step in range(1, 6):
    buffer.add(step, {"loss_sum": step})
  assert waited == [1, 2, 3]  # adding step n waits for step n - 2


def test_checkpoints_on_a_time_interval_beside_the_step_interval(tmp_path):
  """checkpoint_every_minutes (§6.1's 10-minute checkpoints): with a 0.1 s interval and 0.2 s of
  input per step, steps before the last are saved although the step interval (1000) never fires;
  tokens per update are logged per side."""
  config = tiny_run_config(steps=6, checkpoint_every=1000)
  config.checkpoint_every_minutes = 0.1 / 60
  config.keep_checkpoints = 10
  config.eval_every_steps = 0
  data = trainer.TrainingData(
      vocab_size=VOCAB, train_iter=synthetic.make_train_iterator(
          rows=ROWS, length=LENGTH, vocab_size=VOCAB, delay=0.2), eval_batches=[])
  trainer.train_and_evaluate(config, str(tmp_path), data=data)
  saved = sorted(int(s) for s in os.listdir(os.path.join(str(tmp_path), "checkpoints")))
  assert len(saved) >= 2 and saved[-1] == 6, saved
  last = read_metrics(str(tmp_path), "train")[-1]
  assert 0 < last["target_tokens_per_update"] <= ROWS * LENGTH
  assert last["source_tokens_per_update"] == last["target_tokens_per_update"]  # a copy task


def test_a_second_trainer_on_a_busy_workdir_refuses_at_once(tmp_path):
  """The live trainer's lock (here held by this test, as a running trainer holds it) stops a
  second one before it reads data or compiles, naming the holder's host and pid."""
  workdir = str(tmp_path)
  with WorkdirLock(workdir):
    with pytest.raises(WorkdirBusyError,
                       match=rf"in use by another trainer \(host .*, pid {os.getpid()},"):
      trainer.train_and_evaluate(tiny_run_config(steps=2), workdir, data=_data())
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_a_lock_left_by_a_dead_trainer_is_taken_over_with_a_notice(tmp_path, caplog):
  workdir = str(tmp_path)
  (tmp_path / "trainer.lock").write_text(json.dumps(
      {"host": "old-host", "pid": 999999, "started": "2026-01-01 00:00:00"}))
  caplog.set_level("WARNING", logger="absl")
  config = tiny_run_config(steps=2)
  config.eval_every_steps = 0
  trainer.train_and_evaluate(config, workdir, data=_data(eval_batches=0))
  assert any("left by host old-host, pid 999999" in r.getMessage() for r in caplog.records)
  assert (tmp_path / "trainer.lock").read_text() == ""  # released at the end


def test_resume_with_changed_optimizer_settings_converts_the_state(tmp_path, caplog):
  """Clipping, accumulation and weight decay change the saved state's layout: the checkpoint is
  read as saved and converted (logged), never set aside, and training goes on from it."""
  workdir = str(tmp_path)
  config = tiny_run_config(steps=4, checkpoint_every=4)
  config.eval_every_steps = 0
  trainer.train_and_evaluate(config, workdir, data=_data(eval_batches=0))
  caplog.set_level("WARNING", logger="absl")
  steps_done = 4
  for key, value in (("grad_clip_norm", 1.0), ("grad_accum_steps", 2), ("weight_decay", 0.01)):
    config[key] = value
    config.num_train_steps += 2
    state = trainer.train_and_evaluate(config, workdir, data=_data(eval_batches=0))
    steps_done += 2 * config.grad_accum_steps
    assert int(state.step) == steps_done  # micro-batches consumed, from where it stopped
    assert any(f"{key}: checkpoint" in r.getMessage() and "converted" in r.getMessage()
               for r in caplog.records), key
  assert not os.path.exists(os.path.join(workdir, "checkpoints_broken"))


def test_resuming_with_a_changed_config_names_each_change(tmp_path, caplog):
  workdir = str(tmp_path)
  config = tiny_run_config(steps=2, checkpoint_every=2)
  config.eval_every_steps = 0
  caplog.set_level("WARNING", logger="absl")
  trainer.train_and_evaluate(config, workdir, data=_data(eval_batches=0))
  trainer.train_and_evaluate(config, workdir, data=_data(eval_batches=0))  # the same config
  assert not [r for r in caplog.records if "differs from this workdir's last run" in r.getMessage()]

  config.schedule, config.num_train_steps, config.model.dropout_rate = "cosine", 4, 0.3
  state = trainer.train_and_evaluate(config, workdir, data=_data(eval_batches=0))
  assert int(state.step) == 4
  [message] = [r.getMessage() for r in caplog.records
               if "differs from this workdir's last run" in r.getMessage()]
  old = tiny_run_config(steps=2)
  assert f"schedule: {old.schedule!r} -> 'cosine'" in message
  assert f"model.dropout_rate: {old.model.dropout_rate!r} -> 0.3" in message
  assert "num_train_steps: 2 -> 4" in message
  assert "seed" not in message

  (tmp_path / "config.json").write_text('{"config": {"sched')  # cut short: not compared
  config.num_train_steps = 5
  assert int(trainer.train_and_evaluate(config, workdir, data=_data(eval_batches=0)).step) == 5
