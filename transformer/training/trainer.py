"""`train_and_evaluate(config, workdir)`: the training loop that `train.py` and notebooks run.

Any task (transformer/tasks: translation, language modelling), named by `config.task`: the task
supplies the data, the model and its logits, extra validation metrics and samples, and the final
evaluation; this loop supplies one jit-compiled step over a mesh of every device (sharding.py),
Orbax checkpoints with the data iterator's position (checkpointing.py), TensorBoard and
metrics.jsonl (writers.py), validation every `eval_every_steps`, and the final evaluation.

Steps count optimizer updates: with `grad_accum_steps = k` every step reads k batches.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from tqdm import tqdm

from transformer.config_files import RUN_RECORD, read_run_record
from transformer.files import write_atomically
from transformer.loss import summarize
from transformer.models import count_params
from transformer.tasks import Task, TrainingData, get_task
from transformer.training import sharding
from transformer.training.checkpointing import Checkpointer, PreemptionWatcher, run_settings
from transformer.training.flops import batch_flops, peak_flops_per_device, train_step_flops
from transformer.training.optimizer import learning_rate_at, optimizer_from_config
from transformer.training.run_length import run_length
from transformer.training.steps import TrainState, convert_state, eval_step, init_state, train_step
from transformer.training.validation import validate_config
from transformer.training.workdir_lock import WorkdirLock
from transformer.training.writers import MetricWriter

LOSS_SUMS = ("loss_sum", "nll_sum", "correct", "tokens")  # loss.loss_and_metrics's sums
# Steps dispatched but not finished at most: the device always has the next step queued, and a
# SIGTERM or a checkpoint never waits for a long queue (JAX would otherwise let the loop run
# dozens of steps ahead of a slow device).
MAX_STEPS_IN_FLIGHT = 2


def write_resolved_config(config, model_config, workdir: str, mesh) -> None:
  """WORKDIR/config.json: the run config as resolved, the model config and the devices."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  record = {"config": config.to_dict(), "model": dataclasses.asdict(model_config),
            "devices": int(mesh.devices.size), "processes": jax.process_count(),
            "platform": jax.devices()[0].platform, "jax": jax.__version__}
  text = json.dumps(record, indent=2, sort_keys=True, default=str)
  path = os.path.join(workdir, RUN_RECORD)
  try:
    previous = (read_run_record(workdir) or {}).get("config")
  except (OSError, ValueError):  # unreadable or cut short: nothing to compare
    previous = None
  if isinstance(previous, dict):  # compared as written: tuples as lists, other values as text
    changes = config_changes(previous, json.loads(text)["config"])
    if changes:
      logging.warning("The config differs from this workdir's last run (%s): %s. The run goes "
                      "on with the new values.", path, "; ".join(changes))
  write_atomically(path, text)  # a run killed while writing leaves the old record whole


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
  """`key: old -> new` for each key whose value differs between two config dicts (nested keys
  dotted), so a resumed run says which settings (a schedule, a batch) it changed."""
  changes = []
  for key in sorted(set(old) | set(new)):
    before, after = old.get(key, "(unset)"), new.get(key, "(unset)")
    if isinstance(before, dict) and isinstance(after, dict):
      changes += config_changes(before, after, f"{prefix}{key}.")
    elif before != after:
      changes.append(f"{prefix}{key}: {before!r} -> {after!r}")
  return changes


def startup_summary(config, model_config, abstract_state, mesh, first_batch: dict) -> dict:
  """The numbers logged at the start (and returned for the benchmark)."""
  rows = first_batch["inputs"].shape[0] * jax.process_count()
  target_len = first_batch["targets"].shape[1]
  if model_config.architecture == "decoder_only":
    source_len, shape = 0, f"{rows} rows x {target_len} positions"
  else:
    source_len = first_batch["inputs"].shape[1]
    shape = f"{rows} rows x ({source_len} source + {target_len} target) positions"
  step_flops = train_step_flops(model_config, rows=rows, source_len=source_len,
                                target_len=target_len, grad_accum_steps=config.grad_accum_steps)
  peak, peak_text = peak_flops_per_device(jax.devices()[0], model_config.dtype)
  return {
      "params": count_params(abstract_state.params),
      "devices": sharding.describe(mesh),
      "parallelism": config.parallelism,
      "batch_shape": shape,
      "tokens_per_step": rows * (source_len + target_len) * config.grad_accum_steps,
      "flops_per_step": step_flops,
      "peak_flops_per_device": peak,
      "peak_text": peak_text,
  }


def log_summary(summary: dict, config) -> None:
  logging.info("Parameters: %s", f"{summary['params']:,}")
  logging.info("Devices: %s; parallelism: %s", summary["devices"], summary["parallelism"])
  logging.info("Global batch: %s%s = %s token positions per step", summary["batch_shape"],
               f" x {config.grad_accum_steps} accumulated" if config.grad_accum_steps > 1 else "",
               f"{summary['tokens_per_step']:,}")
  logging.info("FLOPs per step: %.3g (matmuls, 3 x forward; see transformer/training/flops.py)",
               summary["flops_per_step"])
  logging.info("Peak FLOP/s used for MFU: %s", summary["peak_text"])


def _add(a, b):
  return jax.tree.map(jnp.add, a, b)


class _MetricsBuffer:
  """Device metrics of the steps since the last sync; fetched in one transfer when needed.

  Adding a step's metrics waits (copying nothing) for the step `max_in_flight` steps back, so at
  most that many dispatched steps are unfinished.
  """

  def __init__(self, max_in_flight: int = MAX_STEPS_IN_FLIGHT):
    self.max_in_flight = max_in_flight
    self.pending: list[tuple[int, dict]] = []

  def add(self, step: int, metrics: dict) -> None:
    self.pending.append((step, metrics))
    if len(self.pending) > self.max_in_flight:
      jax.block_until_ready(self.pending[-1 - self.max_in_flight][1]["loss_sum"])

  def fetch(self) -> list[tuple[int, dict]]:
    """Host copies of the pending metrics; raises FloatingPointError at the first bad loss."""
    pending, self.pending = self.pending, []
    host = jax.device_get([m for _, m in pending])
    out = [(step, m) for (step, _), m in zip(pending, host)]
    for step, m in out:
      if not np.isfinite(m["loss_sum"]) or not np.isfinite(m["grad_norm"]):
        raise FloatingPointError(
            f"Loss is {float(m['loss_sum'])} (gradient norm {float(m['grad_norm'])}) at step "
            f"{step}; stopping.")
    return out


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _evaluate(eval_fn, params, batches: list[dict], mesh) -> dict | None:
  sums = None
  for batch in batches:
    metrics = eval_fn(params, sharding.global_batch(batch, mesh))
    sums = metrics if sums is None else _add(sums, metrics)
  return None if sums is None else summarize(jax.device_get(sums))


def _time_to_save(last_save_time: float, minutes: float, sync_point: bool) -> bool:
  """`minutes` passed since the last save (process 0's clock decides, at log steps, when there
  are several hosts, so all save the same step)."""
  if not minutes:
    return False
  due = time.monotonic() - last_save_time >= 60.0 * minutes
  if jax.process_count() == 1:
    return due
  if not sync_point:
    return False
  return bool(sharding.from_process_0(int(due)))


def _stop_requested(watcher: PreemptionWatcher, sync_point: bool) -> bool:
  """SIGTERM seen (on any host: all hosts agree, at log steps, when there are several)."""
  if jax.process_count() == 1:
    return watcher.requested
  if not sync_point:
    return False
  flags = multihost_utils.process_allgather(np.int32(watcher.requested))
  return bool(np.max(flags))


def train_and_evaluate(config, workdir: str, *, data: TrainingData | None = None,
                       clock=time.monotonic) -> TrainState:
  """Trains `config` in `workdir` (resuming from its latest checkpoint), then evaluates.

  Args:
    config: a run config (configs/*.py).
    workdir: checkpoints, config.json, metrics.jsonl, TensorBoard files and eval_test.json.
    data: the data to train on; default: the task's (`config.task`) data for `config`.
    clock: what the time budget (`config.train_minutes`) reads, in seconds.
  Returns:
    The final train state (or the state at which a SIGTERM stopped the run).
  Raises:
    WorkdirBusyError: another live trainer holds `workdir` (before any work starts).
  """
  workdir = os.path.abspath(workdir)
  mesh = sharding.make_mesh()
  validate_config(config, num_devices=mesh.devices.size, process_count=jax.process_count())
  lock = WorkdirLock(workdir) if jax.process_index() == 0 else None  # one lock per workdir
  if lock is not None:
    lock.acquire()
  try:
    return _train_and_evaluate(config, workdir, data, mesh, get_task(config), clock)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate(config, workdir: str, data: TrainingData | None, mesh, task: Task,
                        clock) -> TrainState:
  steps = run_length(config, workdir, clock)
  config = steps.config  # with a time budget's count if this run recorded one
  if data is None:
    data = task.data(config, workdir)
  model_config = task.model_config(config, data.vocab_size)
  write_resolved_config(config, model_config, workdir, mesh)

  tx = optimizer_from_config(config, model_config.d_model)
  init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
  init_fn = functools.partial(init_state, model_config, tx,
                              grad_accum_steps=config.grad_accum_steps)

  def sharded_abstract(init):
    """ShapeDtypeStructs with this run's shardings of the state `init(key)` makes."""
    shapes = jax.eval_shape(init, init_key)
    shardings = sharding.state_shardings(shapes, mesh, config.parallelism)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        shapes, shardings), shardings

  abstract, state_shardings = sharded_abstract(init_fn)

  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
  train_iter = data.train_iter

  def adapt(saved: dict):
    """The state as a checkpoint with other STATE_SETTINGS saved it, and its conversion."""
    saved_config = ml_collections.ConfigDict(config.to_dict())
    saved_config.update(saved)
    old_abstract, _ = sharded_abstract(functools.partial(
        init_state, model_config, optimizer_from_config(saved_config, model_config.d_model),
        grad_accum_steps=saved_config.grad_accum_steps))
    convert = jax.jit(functools.partial(convert_state, tx=tx,
                                        grad_accum_steps=config.grad_accum_steps),
                      out_shardings=state_shardings)
    return old_abstract, convert

  state, start_step = checkpointer.restore_latest(
      abstract, train_iter if data.checkpointable else None, model_config,
      settings=run_settings(config), adapt=adapt)
  if state is None:
    start_step = 0
    state = jax.jit(init_fn, out_shardings=state_shardings)(init_key)
  else:
    logging.info("Resumed from the checkpoint of step %d in %s", start_step,
                 checkpointer.directory)
  steps.start(start_step)

  accum = config.grad_accum_steps

  def compile_train_step(tx):
    return jax.jit(
        functools.partial(train_step, forward=task.forward(model_config), tx=tx,
                          label_smoothing=config.label_smoothing, dropout_key=dropout_key,
                          grad_accum_steps=accum, batch_metrics=task.batch_metrics),
        in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0)

  train_fn = compile_train_step(tx)
  eval_fn = jax.jit(
      functools.partial(eval_step, forward=task.forward(model_config.replace(deterministic=True)),
                        label_smoothing=0.0),
      in_shardings=(state_shardings.params, sharding.batch_sharding(mesh)),
      out_shardings=sharding.replicated(mesh))

  first_batch = next(train_iter)
  summary = startup_summary(config, model_config, abstract, mesh, first_batch)
  log_summary(summary, config)
  peak_total = (summary["peak_flops_per_device"] or 0) * mesh.devices.size

  writer = MetricWriter(workdir)
  watcher = PreemptionWatcher()
  buffer = _MetricsBuffer()
  bar = tqdm(total=steps.num_steps, initial=start_step, unit="step", dynamic_ncols=True,
             disable=jax.process_index() != 0, mininterval=1.0, desc="train")
  pending_batch = first_batch
  last_saved = start_step
  last_save_time = time.monotonic()
  saved_stop = False
  last_validation = None
  step = start_step
  try:
    interval_start, interval_steps, interval_flops = time.perf_counter(), 0, 0.0
    while step < steps.num_steps:
      step += 1
      metrics = None
      for _ in range(accum):
        batch = pending_batch if pending_batch is not None else next(train_iter)
        pending_batch = None
        interval_flops += batch_flops(model_config, batch, jax.process_count())
        state, micro = train_fn(state, sharding.global_batch(batch, mesh))
        metrics = micro if metrics is None else _add(metrics, micro)
      buffer.add(step, metrics)
      interval_steps += 1
      bar.update(1)

      if step == start_step + 1:  # one sync to report compile + first step time
        jax.block_until_ready(state)
        logging.info("First step (compilation included) took %.1f s",
                     time.perf_counter() - interval_start)
        interval_start, interval_steps, interval_flops = time.perf_counter(), 0, 0.0
        steps.first_step_done(step)

      if steps.after_step(step, metrics):  # the budget fixed the count or the deadline cut it
        if steps.config is not config:  # the schedule's length is known: compile for it
          config = steps.config
          train_fn = compile_train_step(optimizer_from_config(config, model_config.d_model))
        bar.total = steps.num_steps
        bar.refresh()

      is_last = step == steps.num_steps
      log_now = step % config.log_every_steps == 0 or is_last
      stop = _stop_requested(watcher, log_now)
      save_now = is_last or stop or (
          config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0) or (
          _time_to_save(last_save_time, config.get("checkpoint_every_minutes", 0.0), log_now))
      if log_now or save_now:
        checkpointer.check_for_errors()  # a failed background save stops the run here
        fetched = buffer.fetch()  # raises FloatingPointError on a NaN/Inf loss
        if log_now and fetched:
          elapsed = time.perf_counter() - interval_start
          sums = {k: sum(float(m[k]) for _, m in fetched)
                  for k in LOSS_SUMS + task.summed_metrics}
          train = summarize(sums)
          train["grad_norm"] = float(np.mean([m["grad_norm"] for _, m in fetched])) / accum
          train["learning_rate"] = learning_rate_at(config, model_config.d_model, step - 1)
          tokens = sums["tokens"] + sums.get("source_tokens", 0.0)
          # Real (non-pad) tokens per update on each side, over every device and micro-batch.
          if "source_tokens" in sums:
            train["source_tokens_per_update"] = sums["source_tokens"] / len(fetched)
          train["target_tokens_per_update"] = sums["tokens"] / len(fetched)
          if interval_steps and elapsed > 0:
            # mean tokens per step (non-pad source + target) x steps per second
            train["tokens_per_sec"] = tokens / len(fetched) * interval_steps / elapsed
            train["steps_per_sec"] = interval_steps / elapsed
            if peak_total:  # FLOPs of the batches' actual shapes (buckets differ)
              train["mfu"] = interval_flops / elapsed / peak_total
          writer.write(step, "train", train)
          postfix = dict(loss=f"{train['loss']:.3f}",
                         tok_s=f"{train.get('tokens_per_sec', 0):,.0f}")
          if "mfu" in train:
            postfix["mfu"] = f"{100 * train['mfu']:.1f}%"
          bar.set_postfix(**postfix, refresh=False)
          interval_start, interval_steps, interval_flops = time.perf_counter(), 0, 0.0
      if save_now:
        if not bool(_all_finite(state.params)):
          raise FloatingPointError(f"Parameters became NaN or Inf by step {step}; stopping.")
        checkpointer.save(step, state, train_iter if data.checkpointable else None, model_config,
                          settings=run_settings(config))
        last_saved, last_save_time = step, time.monotonic()
      if config.eval_every_steps and data.eval_batches and (
          step % config.eval_every_steps == 0 or is_last):
        evaluation = _evaluate(eval_fn, state.params, data.eval_batches, mesh)
        logging.info("Step %d validation: nll %.4f, accuracy %.4f, perplexity %.3f", step,
                     evaluation["nll"], evaluation["accuracy"], evaluation["perplexity"])
        if data.tokenizer is not None:
          evaluation.update(task.on_validation(config, workdir, state.params, model_config,
                                               data.tokenizer, step))
        writer.write(step, "eval", evaluation)
        last_validation = evaluation
        interval_start, interval_steps, interval_flops = time.perf_counter(), 0, 0.0
      if stop:
        saved_stop = True
        break
  except FloatingPointError as e:
    bar.close()
    checkpointer.wait()
    latest = checkpointer.latest_step()
    if latest is None:
      raise FloatingPointError(
          f"{e} No checkpoint was written before this, so nothing is lost and nothing can be "
          "resumed: lower the learning rate or clip gradients (grad_clip_norm) and start "
          "again.") from None
    raise FloatingPointError(
        f"{e} The last good checkpoint (parameters checked finite when saved) is step {latest} "
        f"in {checkpointer.directory}; lower the learning rate or clip gradients "
        "(grad_clip_norm) and run again to resume from it (changed optimizer settings are "
        "converted on resume).") from None
  finally:
    bar.close()
    watcher.close()
    writer.close()
    checkpointer.close()  # waits for the saves in flight

  if saved_stop:
    logging.warning("Stopped by SIGTERM at step %d; checkpoint saved in %s. Run the same "
                    "command to resume.", last_saved, checkpointer.directory)
    return state
  steps.finish()
  if data.tokenizer is None:
    return state
  task.final_evaluation(config, workdir, state.params, model_config, data.tokenizer,
                        int(state.step), validation=last_validation)
  return state

