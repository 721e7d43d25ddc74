"""Checkpoint averaging (§6.1): `python -m transformer.average --workdir=DIR --last=5`.

"For the base models, we used a single model obtained by averaging the last 5 checkpoints, which
were written at 10-minute intervals. For the big models, we averaged the last 20 checkpoints."

The parameters of the last N checkpoints in WORKDIR/checkpoints (the trainer's Orbax layout) are
averaged elementwise, in float32, and cast back to the parameter dtype. The result is written as
an Orbax checkpoint WORKDIR/averaged/ with three items: `params`, `model` (the TransformerConfig as
JSON, as in the trainer's checkpoints) and `averaging` ({"steps": [...], "step": last}). Translate
and evaluate select it with `--checkpoint=averaged`. Running the command again replaces it.

Keep enough checkpoints to average: the trainer keeps `config.keep_checkpoints` (3 by default);
set it to at least N (and `checkpoint_every_steps` to the interval you want) before training.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from transformer import workdir as workdir_lib
from transformer.cli import fail, line_list
from transformer.workdir import AVERAGED_DIRNAME, CheckpointInfo, WorkdirError


def select_steps(workdir: str, last: int) -> list[int]:
  """The last `last` checkpoint steps of WORKDIR/checkpoints; an error says what is there."""
  if not isinstance(last, int) or last < 1:
    raise ValueError(f"--last={last!r} must be a positive integer.")
  steps = workdir_lib.checkpoint_steps(workdir)
  if not steps:
    raise workdir_lib.no_checkpoint_error(workdir)
  if len(steps) < last:
    raise WorkdirError(
        f"Asked to average the last {last} checkpoints but {os.path.abspath(workdir)}/checkpoints "
        f"keeps only {len(steps)} (steps {line_list(steps)}). Use --last="
        f"{len(steps)}, or train with config.keep_checkpoints >= {last}.")
  return steps[-last:]


def average_checkpoints(workdir: str, last: int = 5) -> tuple[Any, Any, list[int]]:
  """(averaged params, model config, steps) of the last `last` checkpoints in `workdir`.

  Loads one checkpoint at a time (memory: two copies of the parameters in float32).
  """
  steps = select_steps(workdir, last)
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  config = None
  total = None
  for step in steps:
    info = CheckpointInfo("step", os.path.join(directory, str(step)), step)
    step_config = workdir_lib.load_model_config(workdir, info)
    if config is None:
      config = step_config
    elif _shape(step_config) != _shape(config):
      raise WorkdirError(f"Checkpoint of step {step} holds a model of another shape than step "
                         f"{steps[0]}; cannot average them.")
    params = workdir_lib.restore_params(info, config)
    as_f32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    total = as_f32 if total is None else jax.tree.map(jnp.add, total, as_f32)
    dtypes = jax.tree.map(lambda x: x.dtype, params)
    logging.info("Read step %d.", step)
  averaged = jax.tree.map(lambda s, d: (s / len(steps)).astype(d), total, dtypes)
  return averaged, config, steps


def _shape(config) -> tuple:
  from transformer.training.checkpointing import SHAPE_FIELDS  # pylint: disable=g-import-not-at-top
  return tuple(getattr(config, f) for f in SHAPE_FIELDS)


def save_averaged(path: str, params: Any, config, steps: Sequence[int]) -> None:
  """Writes an averaged checkpoint (params, model, averaging) to `path`, replacing one there."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  from transformer.training.checkpointing import model_config_json  # pylint: disable=g-import-not-at-top
  workdir_lib.quiet_orbax()
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  checkpointer.save(os.path.abspath(path), args=ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      model=ocp.args.JsonSave(model_config_json(config)),
      averaging=ocp.args.JsonSave({"steps": [int(s) for s in steps], "step": int(steps[-1])})),
      force=True)
  checkpointer.close()


def average(workdir: str, last: int = 5, output: str | None = None) -> tuple[str, list[int]]:
  """Averages the last `last` checkpoints of `workdir` into `output` (default WORKDIR/averaged)."""
  params, config, steps = average_checkpoints(workdir, last)
  path = output or os.path.join(workdir, AVERAGED_DIRNAME)
  if jax.process_index() == 0:
    save_averaged(path, params, config, steps)
  return os.path.abspath(path), steps


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run as a command, so that the library
  functions of several command modules can be imported together)."""
  flags.DEFINE_string("workdir", None, "A training workdir (checkpoints/ inside).")
  flags.DEFINE_integer("last", 5, "Average the last N checkpoints (paper: 5 base, 20 big).")
  flags.DEFINE_string("output", None,
                      "Where to write the averaged checkpoint (default WORKDIR/averaged).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required.")
  try:
    path, steps = average(FLAGS.workdir, FLAGS.last, FLAGS.output)
  except (WorkdirError, ValueError) as e:
    fail(e)
  print(f"Averaged {len(steps)} checkpoints (steps {', '.join(map(str, steps))}) into {path}. "
        f"Use it with --checkpoint=averaged.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
