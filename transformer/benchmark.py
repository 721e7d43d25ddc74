"""Training speed of a config on the devices found: the train step that `train.py` runs.

    python -m transformer.benchmark --config=configs/default.py
    python -m transformer.benchmark --config=configs/wmt14_ende_base.py --steps=5

Batches are synthetic and full (every position a real token) in the config's shape: `batch_size`
rows of `max_length` for "padded"/"packed" batching, `tokens_per_batch // max_length` rows for
"tokens" (its largest bucket). Prints compile time, step time and training tokens/s (source +
target; a language model's one sequence) after `--warmup` steps on the devices `train.py` would
use (on a CPU host one per core: `config.cpu_devices`), MFU where the device's peak
FLOP/s is known (the peak is printed; the FLOP counting rule is in
transformer/training/flops.py), and peak memory per device. A character-level language model
needs its vocabulary size given: `--config.vocab_size=69` for tiny Shakespeare.
"""

from __future__ import annotations

import functools
import resource
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from transformer import cpu_devices, models, op_profile
from transformer.cli import fail
from transformer.models import count_params
from transformer.tasks import get_task
from transformer.training import sharding, synthetic
from transformer.training.flops import peak_flops_per_device, train_step_flops
from transformer.training.optimizer import optimizer_from_config
from transformer.training.steps import init_state, train_step
from transformer.training.validation import trains_on, validate_config

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run as a command, so that `run` can be imported
  beside other commands' flags: benchmarks/peers.py has its own --profile_dir)."""
  config_flags.DEFINE_config_file("config", "configs/default.py", "Run config file.")
  flags.DEFINE_integer("steps", 20, "Timed steps.")
  flags.DEFINE_integer("warmup", 3, "Untimed steps after compiling.")
  flags.DEFINE_string("profile_dir", "", "Also trace up to 5 steps there and print where a "
                      "step's time goes, op by op (transformer/op_profile.py).")


def benchmark_rows(config, num_devices: int) -> int:
  """Rows of a full batch in the config's shape, rounded to a multiple of the devices."""
  rows = config.batch_size if config.get("batching") != "tokens" else (
      config.tokens_per_batch // config.max_length)
  return max(num_devices, rows // num_devices * num_devices)


class TrainStep:
  """The train step `train.py` runs, compiled for `config` on two synthetic full batches, with
  its sharded state: each call runs one step on the next batch (the state is donated and
  replaced) and returns its metrics without waiting for them."""

  def __init__(self, config):
    self.mesh = mesh = sharding.make_mesh()
    num_devices = mesh.devices.size
    validate_config(config, num_devices=num_devices, process_count=jax.process_count())
    self.model_config = get_task(config).model_config(config, config.vocab_size)
    tx = optimizer_from_config(config, self.model_config.d_model)
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    init_fn = functools.partial(init_state, self.model_config, tx)
    self.abstract = jax.eval_shape(init_fn, init_key)
    shardings = sharding.state_shardings(self.abstract, mesh, config.parallelism)
    self.state = jax.jit(init_fn, out_shardings=shardings)(init_key)

    self.rows, self.length = benchmark_rows(config, num_devices), config.max_length
    it = synthetic.make_train_iterator(
        rows=self.rows, length=self.length, vocab_size=self.model_config.vocab_size, full=True,
        process_index=jax.process_index(), process_count=jax.process_count())
    self.batches = [sharding.global_batch(next(it), mesh) for _ in range(2)]
    step_fn = jax.jit(
        functools.partial(train_step, forward=models.batch_forward(self.model_config), tx=tx,
                          label_smoothing=config.label_smoothing, dropout_key=dropout_key),
        in_shardings=(shardings, sharding.batch_sharding(mesh)),
        out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
    t0 = time.perf_counter()
    self.compiled = step_fn.lower(self.state, self.batches[0]).compile()
    self.compile_s = time.perf_counter() - t0
    self.steps_run = 0

  def __call__(self):
    batch = self.batches[self.steps_run % 2]
    self.state, metrics = self.compiled(self.state, batch)
    self.steps_run += 1
    return metrics


def run(config, *, steps: int, warmup: int, per_step: bool = False,
        profile_dir: str = "") -> dict:
  """Compiles and times the train step; returns the figures.

  "step_s" is the mean of `steps` steps run back to back; with `per_step` each step is timed on
  its own instead (waiting for its result before the next starts) into "step_times", and
  "step_s" is their mean. With `profile_dir`, min(steps, 5) more steps are traced there and
  "profile" is their op table (op_profile).
  """
  step = TrainStep(config)
  for _ in range(warmup):
    metrics = step()
  jax.block_until_ready((step.state, metrics) if warmup else step.state)
  step_times = []
  if per_step:
    for _ in range(steps):
      t0 = time.perf_counter()
      jax.block_until_ready((step(), step.state))
      step_times.append(time.perf_counter() - t0)
    step_s = sum(step_times) / steps
  else:
    t0 = time.perf_counter()
    for _ in range(steps):
      metrics = step()
    jax.block_until_ready((step.state, metrics))
    step_s = (time.perf_counter() - t0) / steps
  profile = None
  if profile_dir:
    profile = op_profile.profile(step, min(steps, 5), step.compiled.as_text(), profile_dir)

  model_config, rows, length = step.model_config, step.rows, step.length
  mesh, abstract, compile_s = step.mesh, step.abstract, step.compile_s
  num_devices = mesh.devices.size
  if model_config.architecture == "decoder_only":  # a language model reads one sequence
    tokens_per_step, shape = rows * length, f"{rows} rows x {length} tokens"
  else:  # full batches: every source and target position
    tokens_per_step = rows * 2 * length
    shape = f"{rows} rows x {length} source + {length} target tokens"
  flops = train_step_flops(model_config, rows=rows, source_len=length, target_len=length)
  peak, peak_text = peak_flops_per_device(jax.devices()[0], model_config.dtype)
  memory = []
  for device in jax.local_devices():
    stats = device.memory_stats() or {}
    memory.append(stats.get("peak_bytes_in_use"))
  return {
      "devices": sharding.describe(mesh), "params": count_params(abstract.params),
      "batch": shape,
      "compile_s": compile_s, "step_s": step_s, "step_times": step_times,
      "tokens_per_s": tokens_per_step / step_s,
      "tokens_per_s_per_device": tokens_per_step / step_s / num_devices,
      "flops_per_step": flops, "tflops_per_s": flops / step_s / 1e12,
      "mfu": flops / step_s / (peak * num_devices) if peak else None, "peak_text": peak_text,
      "peak_bytes_per_device": memory,
      "host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "profile": profile,
  }


def main(argv):
  del argv
  config = FLAGS.config
  if FLAGS.profile_dir:
    op_profile.enable_cpu_op_events()  # before the backend starts
  try:
    cpu_devices.configure(config.get("cpu_devices", "auto"), lambda n: trains_on(config, n),
                          d_model=config.model.d_model)
    r = run(config, steps=FLAGS.steps, warmup=FLAGS.warmup, profile_dir=FLAGS.profile_dir)
  except ValueError as e:  # a config error (ConfigError): one line, as train.py does
    fail(str(e))
  print(f"config        {config_flags.get_config_filename(FLAGS['config'])}")
  print(f"devices       {r['devices']}; parallelism {config.parallelism}; "
        f"dtype {config.model.dtype}")
  print(f"parameters    {r['params']:,}")
  print(f"batch         {r['batch']} (synthetic, no padding)")
  print(f"compile       {r['compile_s']:.1f} s")
  print(f"step          {r['step_s'] * 1e3:.1f} ms (mean of {FLAGS.steps} after "
        f"{FLAGS.warmup} warm-up steps)")
  print(f"tokens/s      {r['tokens_per_s']:,.0f} ({r['tokens_per_s_per_device']:,.0f} per device)")
  print(f"FLOP/s        {r['tflops_per_s']:.3f} TFLOP/s ({r['flops_per_step']:.3g} FLOPs per step)")
  mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "unknown"
  print(f"MFU           {mfu} (peak: {r['peak_text']})")
  known = [m for m in r["peak_bytes_per_device"] if m is not None]
  if known:
    print(f"peak memory   {max(known) / 2**30:.2f} GiB per device (max over devices)")
  else:
    print(f"peak memory   per device unknown on this platform; host process peak RSS "
          f"{r['host_peak_rss_bytes'] / 2**30:.2f} GiB")

  if r["profile"]:
    print(f"a step, op by op (trace in {FLAGS.profile_dir}; thread time, summed over devices):")
    print(op_profile.format_table(r["profile"]))


if __name__ == "__main__":
  define_flags()
  app.run(main)
