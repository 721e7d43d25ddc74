"""A smoke run of the trainer on synthetic data: checks a device, mesh or multi-host setup.

    python -m transformer.training.smoke --workdir=/tmp/smoke --num_cpu_devices=8 \
        --parallelism=fsdp --steps=20

Two hosts (here two processes on one machine, gloo collectives):

    python -m transformer.training.smoke --workdir=W --num_processes=2 --process_id=0 \
        --coordinator_address=127.0.0.1:12345 &
    python -m transformer.training.smoke --workdir=W --num_processes=2 --process_id=1 \
        --coordinator_address=127.0.0.1:12345

`--train_minutes=M` trains for a budget instead (the count fixed and the deadline kept by
process 0 for all; `--budget_clock_rate` lets one process's clock run fast to check that).
A tiny model learns a copy task; the final parameters go to WORKDIR/final_params.npz and the
per-step losses to WORKDIR/metrics.jsonl. The tests run this module in subprocesses.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from transformer.training import synthetic, trainer
from transformer.training.validation import default_config


def tiny_run_config(*, steps: int = 12, rows: int = 8, length: int = 12, vocab_size: int = 48,
                    checkpoint_every: int = 3, parallelism: str = "data",
                    grad_accum_steps: int = 1, adam_eps: float | None = None):
  """configs/default.py with a tiny model (d_model 32, one layer each side), logging every step;
  `adam_eps` replaces the default's 1e-9 when given."""
  config = default_config()
  config.model.update(d_model=32, d_ff=64, num_heads=2, num_encoder_layers=1,
                      num_decoder_layers=1, dropout_rate=0.1)
  config.vocab_size = vocab_size
  config.max_length = length
  config.batch_size = rows
  config.num_train_steps = steps
  config.log_every_steps = 1
  config.eval_every_steps = 0
  config.checkpoint_every_steps = checkpoint_every
  config.keep_checkpoints = 100
  config.schedule = "paper"  # §5.3's, scaled: these tests' rates, whatever the default's schedule
  config.warmup_steps = 4
  config.learning_rate = 2.0
  config.parallelism = parallelism
  config.grad_accum_steps = grad_accum_steps
  if adam_eps is not None:
    config.adam_eps = adam_eps
  return config


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--steps", type=int, default=12)
  parser.add_argument("--rows", type=int, default=8)
  parser.add_argument("--length", type=int, default=12)
  parser.add_argument("--vocab_size", type=int, default=48)
  parser.add_argument("--checkpoint_every", type=int, default=3)
  parser.add_argument("--grad_accum_steps", type=int, default=1)
  parser.add_argument("--parallelism", default="data")
  parser.add_argument("--adam_eps", type=float, default=None,
                      help="Adam's epsilon (default: the config's 1e-9); a larger one keeps "
                           "gradients that are rounding noise from becoming full-size steps, so "
                           "runs summing in different orders stay comparable")
  parser.add_argument("--num_cpu_devices", type=int, default=0)
  parser.add_argument("--batch_delay", type=float, default=0.0)
  parser.add_argument("--coordinator_address", default=None)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--train_minutes", type=float, default=0.0,
                      help="a time budget instead of --steps (cosine, 11 warm-up steps)")
  parser.add_argument("--budget_clock_rate", type=float, default=1.0,
                      help="this process's budget clock runs this many times as fast (hosts "
                           "measuring different paces must still agree on the steps)")
  args = parser.parse_args(argv)

  if args.num_cpu_devices:
    jax.config.update("jax_num_cpu_devices", args.num_cpu_devices)
  if args.coordinator_address:
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=args.num_processes, process_id=args.process_id)
  logging.set_verbosity(logging.INFO)

  config = tiny_run_config(
      steps=args.steps, rows=args.rows, length=args.length, vocab_size=args.vocab_size,
      checkpoint_every=args.checkpoint_every, parallelism=args.parallelism,
      grad_accum_steps=args.grad_accum_steps, adam_eps=args.adam_eps)
  clock = time.monotonic
  if args.train_minutes:
    config.train_minutes, config.schedule, config.warmup_steps = args.train_minutes, "cosine", 11
    config.learning_rate, config.num_train_steps = 0.01, 1_000_000
    rate, start = args.budget_clock_rate, time.monotonic()
    clock = lambda: start + rate * (time.monotonic() - start)  # noqa: E731
  it = synthetic.make_train_iterator(
      rows=args.rows, length=args.length, vocab_size=args.vocab_size, seed=0,
      process_index=jax.process_index(), process_count=jax.process_count(),
      delay=args.batch_delay)
  data = trainer.TrainingData(vocab_size=args.vocab_size, train_iter=it, eval_batches=[])
  state = trainer.train_and_evaluate(config, args.workdir, data=data, clock=clock)
  step = int(jax.device_get(state.step)) // args.grad_accum_steps
  if args.train_minutes:
    print(f"BUDGET {step}", flush=True)
    return
  if step < args.steps:
    print(f"STOPPED {step}", flush=True)
    return
  params = jax.tree_util.tree_flatten_with_path(state.params)[0]
  host = {jax.tree_util.keystr(path): np.asarray(jax.device_get(
      multihost_utils.process_allgather(x, tiled=True)))
          for path, x in params}
  if jax.process_index() == 0:
    np.savez(os.path.join(args.workdir, "final_params.npz"), **host)
  print(f"FINISHED {step}", flush=True)


if __name__ == "__main__":
  main()
