"""One JAX device per CPU core, so a CPU host trains data-parallel across its cores.

JAX gives a CPU host one device, and XLA spreads each operation of a program over the cores
itself. The operations of a small Transformer are too small for that: profiled on a 2-core
machine (docs/performance.md), the matmuls of the language model's step ran one after another
at about one core's speed. With one device per core the trainer's data parallelism
(training/sharding.py) hands each core its share of the batch as a whole program, the gradients
are averaged across the devices, and the same step runs 1.2-1.5x faster. The update is the same
one (the mean over the whole batch), up to the order of floating-point sums.

`config.cpu_devices`: "auto" (the default) is one device per usable core, at most
`AUTO_MAX_DEVICES`, lowered until the config's batch splits evenly across them, for models
narrower than `AUTO_MIN_SINGLE_D_MODEL` (wider ones keep one device); a number sets that many;
1 is JAX's own single device. It only concerns the CPU backend: on a GPU or TPU the
accelerators are the devices and this setting changes nothing they run.
"""

from __future__ import annotations

import os
from typing import Callable

import jax
from absl import flags

from transformer import cpu_memory
from transformer.config import ConfigError

# Measured on 2 cores only (docs/performance.md); the cap keeps large CPU hosts from splitting a
# small batch into many tiny ones on the strength of that measurement alone.
AUTO_MAX_DEVICES = 8
# From this width on "auto" keeps one device for training. Measured on 2 cores
# (docs/performance.md): d_model 128-256 trained 1.1-1.3x faster with one device per core; the
# base model (d_model 512, 6+6 layers) ran 4.9 s a step on one device, 5.5 on two with data
# parallelism and 5.6 with fsdp: its matmuls already keep both cores busy, and more devices
# only add the gradient reduction and per-device copies of the elementwise work.
AUTO_MIN_SINGLE_D_MODEL = 512
FORCE_FLAG = "xla_force_host_platform_device_count"
# The CPU client's thread pool runs every device's program and their operations' parallel work.
# At its default size (one thread per core) two devices on two cores deadlocked in the gradient
# all-reduce, one device's program waiting for the other's, which found no thread, and XLA
# aborted after 40 s ("Termination timeout for `all reduce ...`"): now and then on an idle
# machine, in 8 of 8 runs beside two busy processes; with 3 threads in 3 of 3 idle runs; with 4
# threads in none of 13 (11 beside the busy processes). docs/performance.md. The variable is read
# once, when the CPU client starts; a value the user set is kept.
THREAD_POOL_VARIABLES = ("PJRT_NPROC", "NPROC")


def thread_pool_size(devices: int, cores: int, collectives: bool = True) -> int:
  """Threads for the CPU client: one per core for the operations' work, plus, where the
  programs communicate (training's gradient all-reduce), one per device that may sit blocked in
  a collective. Programs that never wait for each other (decoding, each device translating its
  own sentences) get one thread per core: more only take turns on the cores (the small model's
  greedy decoding ran 15-20% slower with 4 threads than with 2 for its two devices,
  docs/performance.md)."""
  return cores + devices if collectives else cores


def usable_cores() -> int:
  """The cores this process may run on (its CPU affinity), not all the machine has."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def parse(setting) -> str | int:
  """`config.cpu_devices` as "auto" or an int >= 1 (the command line gives numbers as text)."""
  if isinstance(setting, str) and setting.strip().isdigit():  # --config.cpu_devices=2
    setting = int(setting)
  if setting == "auto" or (isinstance(setting, int) and not isinstance(setting, bool)
                           and setting >= 1):
    return setting
  raise ConfigError(f"cpu_devices={setting!r} must be 'auto' or a number of devices >= 1 "
                    "(1 = JAX's single CPU device).")


def choose(setting, fits: Callable[[int], bool], cores: int) -> int:
  """The device count for `setting` ("auto" or a positive int).

  "auto": the largest n <= min(cores, AUTO_MAX_DEVICES) with `fits(n)` (the config trains on n
  devices), else 1. A number is taken as given.
  """
  setting = parse(setting)
  if setting != "auto":
    return setting
  for n in range(min(cores, AUTO_MAX_DEVICES), 1, -1):
    if fits(n):
      return n
  return 1


def define_decoding_flag() -> None:
  """`--cpu_devices` of the commands that decode (translate, evaluate, the decoding benchmark):
  their batches' sentences are split over the devices (translator.py)."""
  flags.DEFINE_string("cpu_devices", "auto",
                      "On a CPU host: 'auto' (one JAX device per core, a batch's sentences "
                      "split over them) or a number of devices; 1 = JAX's single device.")


def configure(setting, fits: Callable[[int], bool], *, multi_process: bool = False,
              d_model: int | None = None, collectives: bool = True) -> int | None:
  """Sets JAX's CPU device count from `config.cpu_devices`; returns it, or None where JAX keeps
  its own.

  Call before the first JAX operation. With more than one device it also sizes the CPU client's
  thread pool (PJRT_NPROC, `thread_pool_size`) unless PJRT_NPROC or NPROC is set. "auto"
  defers to a count already chosen (XLA_FLAGS' --xla_force_host_platform_device_count,
  jax_num_cpu_devices set in code, backends already running) and to multi-process runs, whose
  processes may share the cores; an explicit number that comes too late is a ConfigError.
  `d_model`, the width of the model to train: from `AUTO_MIN_SINGLE_D_MODEL` on, "auto" is one
  device. `collectives=False`: the programs never communicate (the decoding commands), so the
  pool needs no thread beyond one per core. It also keeps the memory the CPU programs free for
  their next run (`cpu_memory.keep_freed_memory`).
  """
  setting = parse(setting)
  cpu_memory.keep_freed_memory()
  if setting == "auto" and (multi_process or FORCE_FLAG in os.environ.get("XLA_FLAGS", "")
                            or jax.config.jax_num_cpu_devices >= 0):
    return None
  cores = usable_cores()
  wide = setting == "auto" and d_model is not None and d_model >= AUTO_MIN_SINGLE_D_MODEL
  count = 1 if wide else choose(setting, fits, cores)
  if count > 1 and not any(name in os.environ for name in THREAD_POOL_VARIABLES):
    os.environ[THREAD_POOL_VARIABLES[0]] = str(thread_pool_size(count, cores, collectives))
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:
    if setting == "auto":
      return None
    raise ConfigError(f"cpu_devices={setting!r} must be applied before JAX starts its backends; "
                      "it was set after a JAX operation had run in this process.") from None
  return count
