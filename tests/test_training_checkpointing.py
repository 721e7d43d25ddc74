"""Checkpoints: the data position travels with the state; broken or partial saves are skipped."""

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging

from transformer.config import TransformerConfig
from transformer.training import synthetic, trainer
from transformer.training.checkpointing import Checkpointer, CheckpointSaveError, ModelMismatchError
from transformer.training.smoke import tiny_run_config


def _state(value):
  return {"w": jnp.full((4, 3), value, jnp.float32), "step": jnp.asarray(int(value), jnp.int32)}


def _abstract():
  return jax.eval_shape(lambda: _state(0.0))


def _iterator():
  return synthetic.make_train_iterator(rows=2, length=5, vocab_size=20)


def _save_steps(workdir, steps, model_config=None):
  ckpt = Checkpointer(workdir, keep=5)
  it = _iterator()
  for step in steps:
    for _ in range(step - (ckpt.latest_step() or 0)):
      next(it)
    ckpt.save(step, _state(float(step)), it, model_config)
    ckpt.wait()
  ckpt.close()


def test_restore_continues_the_data_stream_exactly(tmp_path):
  _save_steps(str(tmp_path), [3])
  it = _iterator()
  state, step = Checkpointer(str(tmp_path)).restore_latest(_abstract(), it)
  assert step == 3 and float(state["w"][0, 0]) == 3.0
  expected = synthetic.make_batch(3, rows=2, length=5, vocab_size=20, seed=0)
  np.testing.assert_array_equal(next(it)["inputs"], expected["inputs"])


def test_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
  workdir = str(tmp_path)
  _save_steps(workdir, [2, 4])
  state_dir = os.path.join(workdir, "checkpoints", "4", "state")
  for root, _, files in os.walk(state_dir):
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(max(os.path.getsize(f.name) // 3, 1) - 1)
  it = _iterator()
  logging.get_absl_handler()  # make sure absl's logger propagates to caplog
  with caplog.at_level("WARNING"):
    state, step = Checkpointer(workdir).restore_latest(_abstract(), it)
  assert step == 2 and float(state["w"][0, 0]) == 2.0
  assert "Checkpoint of step 4" in caplog.text and "cannot be read" in caplog.text
  broken = os.listdir(os.path.join(workdir, "checkpoints_broken"))
  assert len(broken) == 1 and broken[0].startswith("4-")  # moved aside, not deleted
  assert Checkpointer(workdir).all_steps() == [2]


def test_an_interrupted_save_is_ignored(tmp_path):
  workdir = str(tmp_path)
  _save_steps(workdir, [2])
  # What a kill during the save of step 5 leaves: a temporary directory, never renamed.
  os.makedirs(os.path.join(workdir, "checkpoints", "5.orbax-checkpoint-tmp", "state"))
  state, step = Checkpointer(workdir).restore_latest(_abstract(), _iterator())
  assert step == 2 and float(state["w"][0, 0]) == 2.0


def test_resuming_with_another_model_shape_says_so(tmp_path):
  saved = TransformerConfig(vocab_size=100, d_model=32, d_ff=64, num_heads=2, max_length=16)
  _save_steps(str(tmp_path), [1], model_config=saved)
  other = saved.replace(d_model=64)
  with pytest.raises(ModelMismatchError, match=r"d_model: checkpoint 32, this config 64"):
    Checkpointer(str(tmp_path)).restore_latest(_abstract(), _iterator(), other)
  # Dropout or dtype changes are not shape changes.
  state, step = Checkpointer(str(tmp_path)).restore_latest(
      _abstract(), _iterator(), saved.replace(dropout_rate=0.3, dtype="bfloat16"))
  assert step == 1


@pytest.fixture
def small_disk(tmp_path):
  """A 1.2 MB tmpfs (needs root, as CI runs); skipped where mounting is not allowed."""
  mount = tmp_path / "disk"
  mount.mkdir()
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
  if result.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode()[:200]}")
  yield str(mount)
  subprocess.run(["umount", str(mount)], check=False)


# Orbax's background writer, stopped by the failed save, leaves an asyncio callback behind.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_full_disk_stops_the_run_with_one_line_and_keeps_earlier_checkpoints(small_disk):
  config = tiny_run_config(steps=40, checkpoint_every=5)
  config.eval_every_steps = 0
  data = trainer.TrainingData(
      vocab_size=48, train_iter=synthetic.make_train_iterator(rows=8, length=12, vocab_size=48),
      eval_batches=[])
  with pytest.raises(CheckpointSaveError) as error:
    trainer.train_and_evaluate(config, small_disk, data=data)
  message = str(error.value)
  assert "\n" not in message
  assert "No space left on device (errno 28)" in message and "MiB free there" in message
  assert "Earlier checkpoints are intact (steps 5" in message
  names = os.listdir(os.path.join(small_disk, "checkpoints"))
  assert names and all(n.isdigit() for n in names)  # no partial temporary directory is left
  kept = sorted(int(n) for n in names)
  failed = int(message.split("checkpoint of step ")[1].split()[0])
  assert failed not in kept and kept[-1] < failed


def test_partial_saves_left_behind_are_removed_at_start(tmp_path):
  _save_steps(str(tmp_path), [1])
  partial = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1234"
  partial.mkdir()
  (partial / "junk").write_text("x")
  ckpt = Checkpointer(str(tmp_path), keep=5)
  assert not partial.exists() and ckpt.all_steps() == [1]
  ckpt.close()


def test_flipped_bytes_are_detected_and_the_checkpoint_set_aside(tmp_path, caplog):
  """42 bytes flipped in an array file of the newest checkpoint: Orbax would read it (its size
  and metadata are intact); the recorded SHA-256 sums catch it."""
  workdir = str(tmp_path)
  _save_steps(workdir, [2, 4])
  assert sorted(os.listdir(tmp_path / "checkpoint_checksums")) == ["2.json", "4.json"]
  files = [p for p in (tmp_path / "checkpoints" / "4" / "state").rglob("*") if p.is_file()]
  target = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 42] = bytes(b ^ 0xFF for b in data[middle:middle + 42])
  target.write_bytes(bytes(data))
  logging.get_absl_handler()
  with caplog.at_level("WARNING"):
    state, step = Checkpointer(workdir).restore_latest(_abstract(), _iterator())
  assert step == 2 and float(state["w"][0, 0]) == 2.0
  assert "Checkpoint of step 4" in caplog.text and "does not match the checksum" in caplog.text
  assert os.listdir(tmp_path / "checkpoints_broken")[0].startswith("4-")
  assert sorted(os.listdir(tmp_path / "checkpoint_checksums")) == ["2.json"]


def test_a_disk_that_refuses_the_checksum_record_stops_with_one_line(tmp_path, monkeypatch):
  # The full disk can hit the checksum record of a finished checkpoint rather than a save.
  from transformer import checkpoint_integrity
  ckpt = Checkpointer(str(tmp_path), keep=5, async_save=False)
  ckpt.save(1, _state(1.0), _iterator())

  def full_disk(step_dir):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(checkpoint_integrity, "record", full_disk)
  monkeypatch.setattr(checkpoint_integrity, "has_record", lambda step_dir: False)
  with pytest.raises(CheckpointSaveError) as error:
    ckpt.save(2, _state(2.0), _iterator())
  message = str(error.value)
  assert "\n" not in message and message.startswith("Writing the checkpoints' checksums to ")
  assert "No space left on device (errno 28)" in message
  assert "Earlier checkpoints are intact (steps 1, 2)" in message and "resume" in message


def test_closing_the_metric_files_on_a_full_disk_logs_instead_of_raising(tmp_path):
  from transformer.training.writers import MetricWriter
  writer = MetricWriter(str(tmp_path))

  class FullDisk:
    def close(self):
      raise OSError(28, "No space left on device")

  writer._tb = FullDisk()  # pylint: disable=protected-access
  writer.close()  # the error that stopped the run is not replaced by this one
  assert not writer.enabled


class _ManagerWhoseSaveFailed:
  """Stands for orbax's manager after an asynchronous save met a full disk: waiting and closing
  (which waits again) both raise the disk's error."""

  def __init__(self, real):
    self.real = real
    self.closed = False

  def __getattr__(self, name):  # what is on disk: the real manager's answers
    return getattr(self.real, name)

  def wait_until_finished(self):
    raise OSError(28, "No space left on device")

  def close(self):
    self.closed = True
    self.real.close()
    raise OSError(28, "No space left on device")


def test_closing_after_a_failed_save_raises_the_one_line_error_not_the_managers(tmp_path):
  ckpt = Checkpointer(str(tmp_path))
  ckpt._last_save_step = 15
  ckpt.manager = _ManagerWhoseSaveFailed(ckpt.manager)
  with pytest.raises(CheckpointSaveError, match="step 15") as error:
    ckpt.close()
  assert "\n" not in str(error.value) and "No space left on device" in str(error.value)
  assert ckpt.manager.closed
