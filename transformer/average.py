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

How many to average can be chosen on the development set, as the paper chose its beam size and
length penalty (§6.1): `--last=1,2,3,4,5,6 --pick_on=validation` averages the last N for each N
(reading each checkpoint once), scores each average on that split through the run's task (BLEU
for translation, higher is better; the loss for a language model, lower is better), prints the
table and writes the best one (the fewest checkpoints on a tie). The averaging record then also
holds the split, the metric and every candidate's score.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
from absl import app, flags, logging

from transformer import compilation_cache, cpu_devices
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


def running_averages(workdir: str, counts: Sequence[int]) -> Iterator[tuple[Any, Any, list[int]]]:
  """(averaged params, model config, steps) of the last N checkpoints for each N of `counts`,
  fewest first, from one pass that reads each checkpoint once, newest first (memory: three
  copies of the parameters in float32)."""
  counts = sorted(set(counts))
  for count in counts:  # each one checked before any reading; `steps` ends as the largest's
    steps = select_steps(workdir, count)
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  config = total = None
  for read, step in enumerate(reversed(steps), 1):
    info = CheckpointInfo("step", os.path.join(directory, str(step)), step)
    step_config = workdir_lib.load_model_config(workdir, info)
    if config is None:
      config = step_config
    elif _shape(step_config) != _shape(config):
      raise WorkdirError(f"Checkpoint of step {step} holds a model of another shape than step "
                         f"{steps[-1]}; cannot average them.")
    params = workdir_lib.restore_params(info, config)
    as_f32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    total = as_f32 if total is None else jax.tree.map(jnp.add, total, as_f32)
    dtypes = jax.tree.map(lambda x: x.dtype, params)
    logging.info("Read step %d.", step)
    if read in counts:
      yield (jax.tree.map(lambda s, d, n=read: (s / n).astype(d), total, dtypes), config,
             steps[-read:])


def average_checkpoints(workdir: str, last: int = 5) -> tuple[Any, Any, list[int]]:
  """(averaged params, model config, steps) of the last `last` checkpoints in `workdir`, loaded
  one at a time (`running_averages` with one count)."""
  return next(running_averages(workdir, [last]))


def _shape(config) -> tuple:
  from transformer.training.checkpointing import SHAPE_FIELDS  # pylint: disable=g-import-not-at-top
  return tuple(getattr(config, f) for f in SHAPE_FIELDS)


def save_averaged(path: str, params: Any, config, steps: Sequence[int],
                  picked: dict | None = None) -> None:
  """Writes an averaged checkpoint (params, model, averaging) to `path`, replacing one there;
  `picked` (how the number of checkpoints was chosen) is added to the averaging record."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  from transformer.training.checkpointing import model_config_json  # pylint: disable=g-import-not-at-top
  workdir_lib.quiet_orbax()
  record = {"steps": [int(s) for s in steps], "step": int(steps[-1])}
  if picked:
    record["picked_on"] = picked
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  checkpointer.save(os.path.abspath(path), args=ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      model=ocp.args.JsonSave(model_config_json(config)),
      averaging=ocp.args.JsonSave(record)),
      force=True)
  checkpointer.close()


def average(workdir: str, last: int = 5, output: str | None = None) -> tuple[str, list[int]]:
  """Averages the last `last` checkpoints of `workdir` into `output` (default WORKDIR/averaged)."""
  params, config, steps = average_checkpoints(workdir, last)
  path = output or os.path.join(workdir, AVERAGED_DIRNAME)
  if jax.process_index() == 0:
    save_averaged(path, params, config, steps)
  return os.path.abspath(path), steps


def _metric(scores: dict) -> tuple[str, bool]:
  """The score a task's evaluation ranks by: (its key, higher is better)."""
  return ("bleu", True) if "bleu" in scores else ("nll", False)


def pick_average(workdir: str, counts: Sequence[int], split: str = "validation", *,
                 config=None, output: str | None = None,
                 **options) -> tuple[str, list[int], dict[int, dict]]:
  """Averages the last N checkpoints for each N of `counts`, evaluates each average on `split`
  through the run's task (`options` go to it, as in the evaluate command: beam_size,
  length_penalty, max_examples, batch_size for translation), and writes the best to `output`
  (default WORKDIR/averaged): the highest BLEU, or the lowest loss, the fewest checkpoints on a
  tie. Returns (its path, its steps, {N: that average's scores}). Nothing is written to
  WORKDIR/eval_<split>.json: evaluate `--checkpoint=averaged` for the files."""
  from transformer.evaluate import run_config  # pylint: disable=g-import-not-at-top
  from transformer.tasks import get_task  # pylint: disable=g-import-not-at-top

  config = run_config(config, workdir).copy_and_resolve_references()
  with config.unlocked():  # one line per candidate; the samples are the evaluate command's
    config.num_samples_to_print = 0
  task = get_task(config)
  tokenizer = workdir_lib.load_tokenizer(workdir)
  table, best = {}, None
  for params, model_config, steps in running_averages(workdir, counts):
    text = f"average of the last {len(steps)} (steps {', '.join(map(str, steps))})"
    scores = task.evaluate(config, workdir, split, params=params, model_config=model_config,
                           tokenizer=tokenizer, step=steps[-1], checkpoint_text=text,
                           write=False, **options)
    table[len(steps)] = scores
    key, higher = _metric(scores)
    if best is None or (scores[key] > best[0][key] if higher else scores[key] < best[0][key]):
      best = (scores, params, model_config, steps)
    logging.info("%s: %s %s on %s", text, key, scores[key], split)
  scores, params, model_config, steps = best
  key, _ = _metric(scores)
  path = output or os.path.join(workdir, AVERAGED_DIRNAME)
  if jax.process_index() == 0:
    save_averaged(path, params, model_config, steps, picked={
        "split": split, "metric": key, "scores": {str(n): s[key] for n, s in table.items()}})
  return os.path.abspath(path), steps, table


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run as a command, so that the library
  functions of several command modules can be imported together)."""
  flags.DEFINE_string("workdir", None, "A training workdir (checkpoints/ inside).")
  flags.DEFINE_string("last", "5", "Average the last N checkpoints (paper: 5 base, 20 big); with "
                      "--pick_on, a comma-separated list of N to choose from, e.g. 1,2,3,4,5,6.")
  flags.DEFINE_string("pick_on", "", "A split (validation) to score each average of --last on, "
                      "keeping the best; empty: average --last without scoring.")
  flags.DEFINE_string("output", None,
                      "Where to write the averaged checkpoint (default WORKDIR/averaged).")
  flags.DEFINE_integer("beam_size", None, "With --pick_on, translation: beam size (default: the "
                       "run config's).")
  flags.DEFINE_float("length_penalty", None, "With --pick_on, translation: length penalty "
                     "(default: the run config's).")
  flags.DEFINE_integer("max_examples", 0, "With --pick_on, translation: score the first N pairs "
                       "(0 = all).")
  cpu_devices.define_decoding_flag()
  flags.declare_key_flag("cpu_devices")


def _counts(text: str) -> list[int]:
  """--last's "5" or "1,2,3,5" as integers; ValueError names the flag and the fix."""
  parts = [p.strip() for p in str(text).split(",")]
  if not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"--last={text!r}: give a positive number of checkpoints, or with "
                     "--pick_on=validation a comma-separated list of them (e.g. --last=1,2,3,4,5).")
  return [int(p) for p in parts]


def _print_table(table: dict[int, dict], split: str) -> None:
  first = next(iter(table.values()))
  key, _ = _metric(first)
  search = (f", beam {first['beam_size']}, length_penalty {first['length_penalty']}"
            if "beam_size" in first else "")
  print(f"{split}{search}: {key} of the average of the last N checkpoints")
  for count, scores in table.items():
    print(f"  N = {count:<3d} {scores[key]:8.4f}   {scores['checkpoint']}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required.")
  try:
    counts = _counts(FLAGS.last)
    if not FLAGS.pick_on:
      given = [f"--{name}" for name in ("beam_size", "length_penalty", "max_examples")
               if FLAGS[name].present]
      if len(counts) > 1 or given:
        raise ValueError(f"{' and '.join([f'--last={FLAGS.last}'] * (len(counts) > 1) + given)} "
                         "only apply when choosing among averages: add --pick_on=validation (or "
                         "give --last a single count).")
      path, steps = average(FLAGS.workdir, counts[0], FLAGS.output)
      table = None
    else:
      cpu_devices.configure(FLAGS.cpu_devices, lambda n: True, collectives=False)
      compilation_cache.enable("auto")
      from transformer import evaluate  # pylint: disable=g-import-not-at-top
      config = evaluate.run_config(None, FLAGS.workdir)
      options = evaluate.search_options(config, beam_size=FLAGS.beam_size,
                                        length_penalty=FLAGS.length_penalty,
                                        max_examples=FLAGS.max_examples)
      path, steps, table = pick_average(FLAGS.workdir, counts, FLAGS.pick_on, config=config,
                                        output=FLAGS.output, **options)
  except (WorkdirError, ValueError) as e:
    fail(e)
  if table:
    _print_table(table, FLAGS.pick_on)
  print(f"Averaged {len(steps)} checkpoints (steps {', '.join(map(str, steps))}) into {path}. "
        f"Use it with --checkpoint=averaged.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
