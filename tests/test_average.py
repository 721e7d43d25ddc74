"""Checkpoint averaging and selection (latest, best, averaged) on the trainer's Orbax layout."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer import workdir as workdir_lib
from transformer.average import average
from transformer.config import TransformerConfig
from transformer.models import init_params
from transformer.training.checkpointing import Checkpointer
from transformer.training.steps import TrainState
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
