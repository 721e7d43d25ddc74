"""Compile time and memory of the train step, per layer layout and rematerialisation policy.

    python -m transformer.compile_benchmark                 # base and big, the table of
                                                            # docs/performance.md
    python -m transformer.compile_benchmark --models=base --rows=8 --length=32

For each case it lowers and compiles the train step (`jit(...).lower(...).compile()`, nothing
runs) and reports the compile seconds and XLA's memory plan for the step
(`compiled.memory_analysis()`: arguments, outputs and temporaries, less what is donated).
The persistent compilation cache is left off unless --cache_dir is given, whereupon every case
is compiled twice: cold, then from the cache after `jax.clear_caches()`.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp

from transformer import compilation_cache, models
from transformer import config as presets
from transformer.training.optimizer import create_optimizer
from transformer.training.schedules import create_schedule
from transformer.training.steps import init_state, train_step


def recipe_step(model_config):
  """(init, step): the WMT recipes' optimizer (§5.3 schedule, Adam) and label smoothing around
  the train step; `init(key)` makes a state, `step` is jitted with the state donated."""
  tx = create_optimizer(schedule=create_schedule(
      "paper", learning_rate=1.0, warmup_steps=4000, d_model=model_config.d_model,
      total_steps=100_000))
  init = functools.partial(init_state, model_config, tx)
  step = jax.jit(functools.partial(train_step, forward=models.batch_forward(model_config), tx=tx,
                                   label_smoothing=0.1, dropout_key=jax.random.PRNGKey(0)),
                 donate_argnums=0)
  return init, step


def compile_step(model_config, *, rows: int, length: int) -> tuple[float, object]:
  """(seconds, compiled) for the train step on [rows, length] batches; nothing is executed."""
  init, step = recipe_step(model_config)
  state = jax.eval_shape(init, jax.random.PRNGKey(0))
  batch = {k: jax.ShapeDtypeStruct((rows, length), jnp.int32) for k in ("inputs", "targets")}
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  return time.perf_counter() - t0, compiled


def planned_bytes(compiled) -> int | None:
  """Arguments + outputs + temporaries - donated (aliased) bytes of XLA's plan, or None."""
  a = compiled.memory_analysis()
  if a is None:
    return None
  return (a.argument_size_in_bytes + a.output_size_in_bytes + a.temp_size_in_bytes
          - a.alias_size_in_bytes)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="base,big")
  parser.add_argument("--rows", type=int, default=390, help="rows per device (recipe: 390)")
  parser.add_argument("--length", type=int, default=64, help="tokens per row (recipe: 64)")
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--layouts", default="unrolled,scanned")
  parser.add_argument("--remat", default="none,dots,full", help="policies measured for big")
  parser.add_argument("--cache_dir", default="", help="measure compiles from this cache too")
  args = parser.parse_args(argv)
  if args.cache_dir:
    compilation_cache.enable(args.cache_dir)

  # One-time costs of the process's first compilation (backend start-up) are not the step's.
  compile_step(presets.tiny(), rows=2, length=8)
  print(f"{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}; "
        f"batch {args.rows} x {args.length} per device, {args.dtype}", flush=True)
  print("| model | layers | remat | compile (s) | cached compile (s) | step memory plan (GiB) |")
  print("| --- | --- | --- | ---: | ---: | ---: |")
  for name in args.models.split(","):
    policies = args.remat.split(",") if name == "big" else ["none"]
    for layout in args.layouts.split(","):
      for policy in policies:
        if policy != "none" and layout != "scanned":
          continue  # remat is measured on the layout a memory-bound user runs: scanned
        model_config = getattr(presets, name)(
            dtype=args.dtype, scan_layers=layout == "scanned", remat_policy=policy,
            max_length=max(256, args.length))
        seconds, compiled = compile_step(model_config, rows=args.rows, length=args.length)
        cached = "-"
        if args.cache_dir:
          jax.clear_caches()
          cached_s, _ = compile_step(model_config, rows=args.rows, length=args.length)
          cached = f"{cached_s:.1f}"
        memory = planned_bytes(compiled)
        memory_text = f"{memory / 2**30:.2f}" if memory is not None else "unknown"
        print(f"| {name} | {layout} | {policy} | {seconds:.1f} | {cached} | {memory_text} |",
              flush=True)


if __name__ == "__main__":
  main()
