"""Checkpoint averaging and selection (latest, best, averaged) on the trainer's Orbax layout."""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer import workdir as workdir_lib
from transformer.average import average, average_checkpoints, pick_average, running_averages
from transformer.config import TransformerConfig
from transformer.data.pipeline import get_tokenizer
from transformer.evaluate import evaluate_workdir
from transformer.models import init_params
from transformer.tasks.translation import TranslationTask
from transformer.training.checkpointing import Checkpointer
from transformer.training.steps import TrainState
from transformer.training.validation import default_config
from transformer.workdir import WorkdirError, find_checkpoint, load_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = TransformerConfig(vocab_size=24, d_model=16, d_ff=32, num_heads=2, num_encoder_layers=1,
                           num_decoder_layers=1, max_length=16)


_BASE = []


def _params(seed):
  """Distinct parameter trees of CONFIG's shapes (one model init, shared: it is slow to trace)."""
  if not _BASE:
    _BASE.append(init_params(CONFIG, jax.random.PRNGKey(0)))
  return jax.tree.map(lambda x: x * (1.0 + seed) + 0.25 * seed, _BASE[0])


def _save(workdir, steps_and_params, keep=10):
  """Checkpoints as the trainer writes them (TrainState with Adam state, model JSON)."""
  tx = optax.adam(1e-3)
  checkpointer = Checkpointer(str(workdir), keep=keep)
  for step, params in steps_and_params:
    state = TrainState(step=jnp.int32(step), params=params, opt_state=tx.init(params))
    checkpointer.save(step, state, None, CONFIG)
  checkpointer.close()


def _assert_trees_close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6,
                                                       atol=1e-7), a, b)


def test_average_of_two_checkpoints_is_their_mean(tmp_path):
  first, second, third = _params(0), _params(1), _params(2)
  _save(tmp_path, [(10, first), (20, second), (30, third)])
  path, steps = average(str(tmp_path), last=2)
  assert steps == [20, 30] and path == str(tmp_path / "averaged")
  params, config, info = load_params(str(tmp_path), "averaged")
  assert config == CONFIG and info.kind == "averaged" and info.averaged_steps == [20, 30]
  _assert_trees_close(params, jax.tree.map(lambda a, b: (a + b) / 2, second, third))
  # Latest is the newest step, read back exactly.
  params, _, info = load_params(str(tmp_path), "latest")
  assert info.step == 30
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), params,
               third)
  # Averaging again replaces the averaged checkpoint.
  average(str(tmp_path), last=3)
  params, _, info = load_params(str(tmp_path), "averaged")
  assert info.averaged_steps == [10, 20, 30]
  _assert_trees_close(params, jax.tree.map(lambda a, b, c: (a + b + c) / 3, first, second, third))


def test_too_few_or_no_checkpoints(tmp_path):
  with pytest.raises(WorkdirError, match=r"No checkpoint.*python train\.py"):
    average(str(tmp_path), last=2)
  _save(tmp_path, [(5, _params(0))])
  with pytest.raises(WorkdirError, match=r"keeps only 1.*--last=1.*keep_checkpoints >= 2"):
    average(str(tmp_path), last=2)
  result = subprocess.run(
      [sys.executable, "-m", "transformer.average", f"--workdir={tmp_path}", "--last=3"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2 and "keeps only 1" in result.stderr


def _metrics(workdir, records):
  with open(os.path.join(workdir, "metrics.jsonl"), "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")


def test_best_checkpoint_by_validation_metric(tmp_path):
  _save(tmp_path, [(10, _params(0)), (20, _params(0)), (30, _params(0))])
  with pytest.raises(WorkdirError, match="no validation metric is recorded"):
    find_checkpoint(str(tmp_path), "best")
  # nll: lowest wins; records of steps without a kept checkpoint are ignored.
  _metrics(tmp_path, [{"step": 5, "split": "eval", "nll": 0.1},
                      {"step": 10, "split": "train", "nll": 0.2},
                      {"step": 10, "split": "eval", "nll": 2.0},
                      {"step": 20, "split": "eval", "nll": 1.5},
                      {"step": 30, "split": "eval", "nll": 1.7}])
  info = find_checkpoint(str(tmp_path), "best")
  assert info.step == 20 and "nll" in info.reason
  # BLEU, when recorded, takes precedence: highest wins.
  _metrics(tmp_path, [{"step": 20, "split": "eval", "nll": 1.5, "bleu": 10.0},
                      {"step": 30, "split": "eval", "nll": 1.7, "bleu": 12.5}])
  assert find_checkpoint(str(tmp_path), "best").step == 30
  # BLEU only at a step no longer kept: the loss decides.
  _metrics(tmp_path, [{"step": 5, "split": "eval", "bleu": 30.0},
                      {"step": 10, "split": "eval", "nll": 1.0},
                      {"step": 20, "split": "eval", "nll": 1.2}])
  assert find_checkpoint(str(tmp_path), "best").step == 10
  _metrics(tmp_path, [{"step": 15, "split": "eval", "nll": 1.0}])
  with pytest.raises(WorkdirError, match="eval_every_steps"):
    find_checkpoint(str(tmp_path), "best")
  assert find_checkpoint(str(tmp_path), 20).step == 20
  with pytest.raises(WorkdirError, match="kept steps: 10, 20, 30"):
    find_checkpoint(str(tmp_path), 25)
  with pytest.raises(ValueError, match="unknown"):
    find_checkpoint(str(tmp_path), "newest")


def test_step_directory_path_selects_it(tmp_path):
  _save(tmp_path, [(3, _params(0)), (4, _params(1))])
  params, config, info = load_params(str(tmp_path), str(tmp_path / "checkpoints" / "3"))
  assert info.step == 3 and config == CONFIG
  _assert_trees_close(params, _params(0))
  assert workdir_lib.checkpoint_steps(str(tmp_path)) == [3, 4]


def test_running_averages_read_once_equal_each_mean(tmp_path):
  trees = [_params(seed) for seed in range(4)]
  _save(tmp_path, [(10 * (i + 1), tree) for i, tree in enumerate(trees)])
  averages = list(running_averages(str(tmp_path), [3, 1, 4]))
  assert [steps for _, _, steps in averages] == [[40], [20, 30, 40], [10, 20, 30, 40]]
  for params, config, steps in averages:
    assert config == CONFIG
    expected = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *trees[-len(steps):])
    _assert_trees_close(params, expected)
  with pytest.raises(WorkdirError, match=r"keeps only 4.*keep_checkpoints >= 5"):
    next(running_averages(str(tmp_path), [2, 5]))


@pytest.fixture(scope="module")
def numbers_run(tmp_path_factory):
  """A workdir of a tiny numbers-task run: config.json, tokenizer and checkpoints at steps 10, 20,
  30 of distinct (untrained) parameters."""
  workdir = str(tmp_path_factory.mktemp("numbers"))
  config = default_config()
  config.numbers.update(num_train=200, num_validation=8, num_test=8)
  config.update(vocab_size=96, tokenizer_sample_sentences=400, max_length=24, eval_batch_size=4)
  config.model.update(d_model=16, d_ff=32, num_heads=2, num_encoder_layers=1,
                      num_decoder_layers=1)
  tokenizer = get_tokenizer(config, workdir)
  model_config = TranslationTask().model_config(config, tokenizer.vocab_size)
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    json.dump({"config": config.to_dict(), "model": dataclasses.asdict(model_config)}, f)
  tx = optax.adam(1e-3)
  checkpointer = Checkpointer(workdir, keep=5)
  for step in (10, 20, 30):
    params = init_params(model_config, jax.random.PRNGKey(step))
    checkpointer.save(step, TrainState(step=jnp.int32(step), params=params,
                                       opt_state=tx.init(params)), None, model_config)
  checkpointer.close()
  return workdir


def test_pick_average_keeps_the_best_on_validation(numbers_run, caplog):
  table_path = os.path.join(numbers_run, "eval_validation.json")
  caplog.set_level(logging.INFO)
  path, steps, table = pick_average(numbers_run, [1, 2, 3], "validation", beam_size=1,
                                    max_examples=8)
  # One line per candidate, not the evaluate command's sample translations for each of them.
  assert not [r for r in caplog.records if r.getMessage().startswith("Sample ")]
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("average of")]
  assert [line.split(":")[1].split()[0] for line in lines] == ["bleu"] * 3
  assert sorted(table) == [1, 2, 3] and path == os.path.join(numbers_run, "averaged")
  assert table[2]["checkpoint"] == "average of the last 2 (steps 20, 30)"
  best = max(table[n]["bleu"] for n in table)
  assert steps == [10, 20, 30][-min(n for n in table if table[n]["bleu"] == best):]
  assert not os.path.exists(table_path)  # candidates are not written as evaluations
  # The written checkpoint is that average, and it scores as recorded through evaluate.
  params, _, info = load_params(numbers_run, "averaged")
  assert info.averaged_steps == steps
  _assert_trees_close(params, average_checkpoints(numbers_run, len(steps))[0])
  again = evaluate_workdir(numbers_run, "validation", checkpoint="averaged", beam_size=1,
                           max_examples=8)
  assert again["bleu"] == pytest.approx(table[len(steps)]["bleu"])
  record = workdir_lib._read_averaging(path)  # pylint: disable=protected-access
  assert record["picked_on"] == {"split": "validation", "metric": "bleu",
                                 "scores": {str(n): table[n]["bleu"] for n in table}}


@pytest.mark.parametrize("scripted, picked", [
    ({1: {"bleu": 10.0}, 2: {"bleu": 12.5}, 3: {"bleu": 12.5}}, [20, 30]),  # tie: fewer
    ({1: {"nll": 2.0}, 2: {"nll": 1.9}, 3: {"nll": 1.8}}, [10, 20, 30]),     # loss: lowest
])
def test_pick_average_ranks_bleu_up_and_loss_down(numbers_run, monkeypatch, scripted, picked):
  def evaluate(self, config, workdir, split, *, params, model_config, tokenizer, step,
               checkpoint_text, write, **options):
    del self, config, workdir, params, model_config, tokenizer, step, options
    assert split == "validation" and not write
    return {**scripted[int(checkpoint_text.split()[4])], "checkpoint": checkpoint_text}
  monkeypatch.setattr(TranslationTask, "evaluate", evaluate)
  output = os.path.join(numbers_run, "picked")
  _, steps, _ = pick_average(numbers_run, [1, 2, 3], output=output)
  assert steps == picked
  assert load_params(numbers_run, output)[2].averaged_steps == picked


def test_command_lines_name_the_fix(numbers_run):
  def run(*flags):
    return subprocess.run([sys.executable, "-m", "transformer.average",
                           f"--workdir={numbers_run}", *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
  for flags, expected in ((["--last=2,x"], "--last='2,x': give a positive number"),
                          (["--last=1,2"], "add --pick_on=validation"),
                          (["--beam_size=2"], "--beam_size only apply")):
    result = run(*flags)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
  result = run("--last=1,3", "--pick_on=validation", "--beam_size=1", "--max_examples=4",
               f"--output={numbers_run}/cli")
  assert result.returncode == 0, result.stderr
  assert "validation, beam 1, length_penalty 0.6: bleu" in result.stdout
  assert "N = 3" in result.stdout and "Use it with --checkpoint=averaged." in result.stdout
