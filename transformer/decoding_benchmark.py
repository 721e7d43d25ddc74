"""Decoding speed: `python -m transformer.decoding_benchmark --config=configs/default.py`.

Prints sentences/s and tokens/s of greedy and beam-4 decoding for a named config (a configs/*.py
file, optionally `file.py:ARG`, or a preset of transformer/config.py: tiny, base, big) with
random parameters, and the speed-up of cached over uncached decoding at output length 64.

What is measured (the same jit-compiled function translation runs, `translator.decode_batch`:
encoder once, `init_decode_cache`, then the search in one `lax.while_loop`):
  - a batch of `--batch_size` random sources of `--source_length` tokens (EOS last);
  - EOS disabled, so every sentence is decoded to exactly `--output_length` tokens (random
    parameters say nothing about when to stop); tokens/s counts the output tokens of the
    returned translations (batch x output_length), not the beam's hypotheses;
  - compilation excluded (one warm-up call), then the fastest of `--repeats` timed calls.
Uncached decoding (`uncached_tokens_to_logits`) keeps the encoder output but re-runs the whole
decoder at every step on a fixed [rows, output_length] buffer holding the prefix (later positions
are hidden by the causal mask), also inside the jit-compiled `lax.while_loop`: a step costs
O(output_length) decoder positions instead of one. Its fixed shape means it also computes the
not-yet-written positions: an uncached decoder that could grow its input would do about half
this work (the mean prefix is output_length / 2).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax import lax

from transformer import cpu_devices, op_profile
from transformer.cli import fail
from transformer.config import EOS_ID, PRESETS, TransformerConfig
from transformer.config_files import load_config_file
from transformer.decoding import beam_search
from transformer.model import Transformer
from transformer.models import init_params
from transformer.tasks import get_task
from transformer.translator import decode_batch, local_params, rows_mesh, split_rows

NO_EOS = -1  # an id no token has: decoding never stops before max_decode_len


def uncached_state(config: TransformerConfig, params: Any, inputs: jax.Array,
                   max_decode_len: int) -> dict:
  """The 'cache' of uncached decoding: the encoder output, the sources, an empty prefix buffer."""
  model = Transformer(config.replace(decode=False, deterministic=True))
  encoded = model.apply({"params": params}, inputs, method=Transformer.encode)
  return {"encoded": encoded, "inputs": inputs,
          "prefix": jnp.zeros((inputs.shape[0], max_decode_len), jnp.int32),
          "index": jnp.zeros((), jnp.int32)}


def uncached_tokens_to_logits(config: TransformerConfig, params: Any):
  """A `tokens -> logits` function that re-runs the full decoder on the prefix every step.

  State: `uncached_state`. At step i the token fed is y_i (BOS at step 0); it is written at
  position i - 1 of the target buffer, the decoder runs on the whole buffer (it shifts right and
  puts BOS first itself), and the logits of position i are returned.
  """
  model = Transformer(config.replace(decode=False, deterministic=True))

  def tokens_to_logits(tokens, state):
    i = state["index"]
    written = lax.dynamic_update_slice(state["prefix"], tokens, (0, jnp.maximum(i - 1, 0)))
    prefix = jnp.where(i > 0, written, state["prefix"])  # [rows, L]
    ones = jnp.ones_like(prefix)  # every position is a target: no padding mask, causal only
    logits = model.apply({"params": params}, state["encoded"], state["inputs"], prefix, ones,
                         method=Transformer.decode)  # [rows, L, vocab]
    step_logits = lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False)
    return step_logits, dict(state, prefix=prefix, index=i + 1)

  return tokens_to_logits


@functools.partial(jax.jit, static_argnames=("config", "beam_size", "length_penalty",
                                             "max_decode_len", "eos_id"))
def decode_batch_uncached(params, inputs, max_lengths, *, config, beam_size, length_penalty,
                          max_decode_len, eos_id=EOS_ID):
  """`translator.decode_batch` without the cache (for the benchmark and the tests)."""
  state = uncached_state(config, params, inputs, max_decode_len)
  return beam_search(uncached_tokens_to_logits(config, params), state,
                     batch_size=inputs.shape[0], beam_size=beam_size, length_penalty=length_penalty,
                     max_decode_len=max_decode_len, max_lengths=max_lengths, eos_id=eos_id)


def load_model_config(name: str) -> TransformerConfig:
  """A preset name (tiny, base, big) or a run config file `configs/X.py[:ARG]`."""
  if name in PRESETS:
    return PRESETS[name]()
  path, _, arg = name.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"--config={name!r} is neither a preset ({', '.join(PRESETS)}) nor a file.")
  run = load_config_file(path, arg or None)
  return get_task(run).model_config(run, run.vocab_size)


def _times(fn, repeats: int) -> list[float]:
  """Seconds of each of `repeats` calls after a warm-up (compile) call."""
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


@dataclasses.dataclass
class RandomBatch:
  """Random parameters and `batch_size` random sources of `source_length` tokens (EOS last),
  split over this process's devices as the Translator splits a batch (on a CPU host, one device
  per core: cpu_devices) when it has several and the batch divides evenly."""
  config: TransformerConfig
  params: Any
  inputs: Any
  max_lengths: Any
  mesh: Any
  device: str
  output_length: int

  @classmethod
  def make(cls, config: TransformerConfig, *, batch_size: int, source_length: int,
           output_length: int, seed: int = 0) -> "RandomBatch":
    if max(source_length, output_length) > config.max_length:
      raise ValueError(f"source_length={source_length} and output_length={output_length} must "
                       f"be <= the model's max_length={config.max_length}.")
    config = config.replace(deterministic=True, decode=False)
    params = init_params(config, jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    inputs = rng.integers(4, config.vocab_size, (batch_size, source_length)).astype(np.int32)
    inputs[:, -1] = EOS_ID
    max_lengths = np.full((batch_size,), output_length, np.int32)
    devices = jax.local_devices()
    mesh = rows_mesh() if batch_size % len(devices) == 0 else None
    params = local_params(params, mesh)
    inputs, max_lengths = split_rows(mesh, inputs, max_lengths)
    device = (f"{devices[0].platform} ({devices[0].device_kind}) "
              f"x{mesh.size if mesh is not None else 1}")
    return cls(config, params, inputs, max_lengths, mesh, device, output_length)

  def search_args(self, *, beam_size: int, length_penalty: float) -> dict:
    """The keyword arguments of a search of this batch (`decode_batch` and the uncached
    `decode_batch_uncached` alike): the model, the beam, `output_length` tokens, EOS disabled."""
    return dict(config=self.config, beam_size=beam_size, length_penalty=length_penalty,
                max_decode_len=self.output_length, eos_id=NO_EOS)

  def search(self, *, beam_size: int, length_penalty: float) -> Callable[[], Any]:
    """The cached search `translate` runs over this batch, EOS disabled, compiled ahead of the
    first call, so that the program timed is the one a profile names (`search.func.as_text()`):
    a callable running it once, returning (sequences, scores) without waiting for them."""
    kwargs = self.search_args(beam_size=beam_size, length_penalty=length_penalty)
    compiled = decode_batch.lower(self.params, self.inputs, self.max_lengths, **kwargs,
                                  mesh=self.mesh).compile()
    return functools.partial(compiled, self.params, self.inputs, self.max_lengths)


def benchmark(config: TransformerConfig, *, batch_size: int = 32, source_length: int = 32,
              output_length: int = 64, beam_sizes=(1, 4), length_penalty: float = 0.6,
              repeats: int = 5, uncached: bool = True, seed: int = 0,
              profile_dir: str = "") -> dict:
  """Timings (seconds per batch) and rates; see the module docstring for what is measured.
  With `profile_dir`, each beam size's cached decoding is also traced there (`repeats` more
  calls, DIR/greedy, DIR/beam4) and its op table (op_profile) is in the row as "profile"."""
  batch = RandomBatch.make(config, batch_size=batch_size, source_length=source_length,
                           output_length=output_length, seed=seed)
  config = batch.config
  results = {"config": dataclasses.asdict(config), "batch_size": batch_size,
             "source_length": source_length, "output_length": output_length,
             "device": batch.device, "decoding": {}}
  for beam in beam_sizes:
    row = {}
    search = batch.search(beam_size=beam, length_penalty=length_penalty)
    # The fastest call: on a shared machine the other processes only ever add time.
    row["cached_times"] = _times(search, repeats)
    if profile_dir:
      name = "greedy" if beam == 1 else f"beam{beam}"
      row["profile"] = op_profile.profile(search, repeats, search.func.as_text(),
                                          os.path.join(profile_dir, name))
    seconds = row["cached_seconds"] = min(row["cached_times"])
    row["sentences_per_sec"] = batch_size / seconds
    row["tokens_per_sec"] = batch_size * output_length / seconds
    if uncached:
      kwargs = batch.search_args(beam_size=beam, length_penalty=length_penalty)
      u_seconds = min(_times(lambda: decode_batch_uncached(
          batch.params, batch.inputs, batch.max_lengths, **kwargs), min(repeats, 3)))
      row["uncached_seconds"] = u_seconds
      row["uncached_tokens_per_sec"] = batch_size * output_length / u_seconds
      row["speedup"] = u_seconds / seconds
    results["decoding"]["greedy" if beam == 1 else f"beam{beam}"] = row
  return results


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (defined only when run as a command, so that the library
  functions of several command modules can be imported together)."""
  flags.DEFINE_string("config", "configs/default.py",
                      "A configs/*.py file (optionally FILE:ARG) or tiny | base | big.")
  flags.DEFINE_integer("batch_size", 32, "Sentences per batch.")
  flags.DEFINE_integer("source_length", 32, "Source tokens per sentence (EOS included).")
  flags.DEFINE_integer("output_length", 64, "Output tokens per sentence.")
  flags.DEFINE_list("beam_sizes", ["1", "4"], "Beam sizes (1 = greedy).")
  flags.DEFINE_integer("repeats", 5, "Timed calls, the fastest reported (at most 3 uncached).")
  flags.DEFINE_bool("uncached", True, "Also time uncached decoding (the speed-up).")
  flags.DEFINE_string("profile_dir", "", "Also trace the cached decoding there and print where "
                      "its time goes, op by op (transformer/op_profile.py).")
  cpu_devices.define_decoding_flag()
  flags.declare_key_flag("cpu_devices")  # listed by --help, as this module's own


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.profile_dir:
    op_profile.enable_cpu_op_events()  # before the backend starts
  try:
    config = load_model_config(FLAGS.config)
    cpu_devices.configure(FLAGS.cpu_devices, lambda n: FLAGS.batch_size % n == 0,
                          collectives=False)
  except ValueError as e:
    fail(e)
  r = benchmark(config, batch_size=FLAGS.batch_size, source_length=FLAGS.source_length,
                output_length=FLAGS.output_length, beam_sizes=[int(b) for b in FLAGS.beam_sizes],
                repeats=FLAGS.repeats, uncached=FLAGS.uncached, profile_dir=FLAGS.profile_dir)
  c = r["config"]
  print(f"config {FLAGS.config}: d_model {c['d_model']}, d_ff {c['d_ff']}, heads "
        f"{c['num_heads']}, layers {c['num_encoder_layers']}+{c['num_decoder_layers']}, vocab "
        f"{c['vocab_size']}, {c['dtype']}; device {r['device']}, {os.cpu_count()} CPU cores")
  print(f"batch {r['batch_size']} sentences, source {r['source_length']} tokens, output "
        f"{r['output_length']} tokens (EOS disabled), fastest of {FLAGS.repeats} calls, "
        "compile excluded")
  for name, row in r["decoding"].items():
    line = (f"{name:7s} cached:   {row['sentences_per_sec']:9.1f} sentences/s "
            f"{row['tokens_per_sec']:11.1f} tokens/s ({row['cached_seconds'] * 1e3:.1f} ms/batch)")
    print(line)
    if "speedup" in row:
      print(f"{name:7s} uncached: {r['batch_size'] / row['uncached_seconds']:9.1f} sentences/s "
            f"{row['uncached_tokens_per_sec']:11.1f} tokens/s "
            f"({row['uncached_seconds'] * 1e3:.1f} ms/batch); cached is "
            f"{row['speedup']:.1f}x faster at output length {r['output_length']}")
    if "profile" in row:
      print(f"{name} cached, op by op (trace in {os.path.join(FLAGS.profile_dir, name)}; "
            f"thread time, summed over devices, per call):")
      print(op_profile.format_table(row["profile"]))


if __name__ == "__main__":
  define_flags()
  app.run(main)
