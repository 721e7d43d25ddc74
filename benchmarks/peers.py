r"""This project beside PyTorch and Hugging Face on one CPU: training steps and decoding.

    pip install -e ".[peers]"   # torch and transformers; on a CPU-only machine install torch's
                                # CPU wheel first (docs/performance.md)
    python benchmarks/peers.py [--passes=2] [--workloads=train_small,train_base,greedy,beam4]
                               [--output=peers.json] [--profile_dir=DIR]

Workloads (the shapes of issue 14):
  train_small  d_model 256, 3+3 layers, d_ff 1024, 8 heads, vocabulary 8,000, shared embeddings,
               dropout 0.1, a batch of 64 x (32 source + 32 target) tokens; tokens/s.
  train_base   d_model 512, 6+6 layers, d_ff 2048, 8 heads, vocabulary 32,000, 16 x (64 + 64).
  greedy/beam4 the small model, random weights, 64 random sources of 32 tokens, exactly 32 new
               tokens each (EOS never chosen); sentences/s.
The peers: `torch.nn.Transformer` with a tied, scaled embedding, sinusoidal positions, label-
smoothed cross-entropy and Adam (benchmarks/torch_peers.py), and Hugging Face `MarianMTModel`'s
`generate` (the paper's architecture in transformers) with `min_new_tokens = max_new_tokens`.
Ours: the train step `train.py` runs (transformer/benchmark.py, one JAX device per core as
`config.cpu_devices="auto"` gives) and the decoding `translate` runs
(transformer/decoding_benchmark.py; EOS disabled). Both sides have attention biases and dropout
0.1 on attention weights as well (torch.nn.Transformer's), label smoothing 0.1, no padding.

Every measurement runs in a fresh process, ours and the peer's alternating, `--passes` times.
Each prints the median seconds of its timed steps or calls, their spread (min-max) and the
threads it used; the ratio is ours / peer in tokens/s or sentences/s, from medians of one pass,
for each pass.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

SMALL = dict(d_model=256, d_ff=1024, num_heads=8, num_encoder_layers=3, num_decoder_layers=3,
             vocab_size=8000, dropout=0.1, label_smoothing=0.1)
BASE = dict(SMALL, d_model=512, d_ff=2048, num_encoder_layers=6, num_decoder_layers=6,
            vocab_size=32000)
WORKLOADS = {
    "train_small": dict(SMALL, kind="train", rows=64, length=32, warmup=2, steps=10),
    "train_base": dict(BASE, kind="train", rows=16, length=64, warmup=1, steps=5),
    "greedy": dict(SMALL, kind="decode", rows=64, length=32, new_tokens=32, beam_size=1,
                   length_penalty=0.6, warmup=1, steps=5),
    "beam4": dict(SMALL, kind="decode", rows=64, length=32, new_tokens=32, beam_size=4,
                  length_penalty=0.6, warmup=1, steps=3),
}

_PASSES = flags.DEFINE_integer("passes", 2, "Times each measurement runs, alternating sides.")
_WORKLOADS = flags.DEFINE_list("workloads", list(WORKLOADS), "Which workloads to run.")
_OUTPUT = flags.DEFINE_string("output", "", "Write every measurement here as JSON.")
_WORKER = flags.DEFINE_string("worker", "", "Internal: measure one workload of ours ('ours').")
_SETTINGS = flags.DEFINE_string("settings", "", "Internal: the workload's settings as JSON.")
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir", "", "Also trace our side of each workload there (DIR/WORKLOAD/passN) and print "
    "where its time goes, op by op (transformer/op_profile.py), after its line.")


def run_config(s: dict):
  """configs/default.py with the workload's model and batch (padded: every position real)."""
  from transformer.config_files import load_config_file
  config = load_config_file("default")
  config.vocab_size = s["vocab_size"]
  config.max_length = s["length"]
  config.batch_size = s["rows"]
  config.batching = "padded"
  config.label_smoothing = s["label_smoothing"]
  config.model.update(
      d_model=s["d_model"], d_ff=s["d_ff"], num_heads=s["num_heads"],
      num_encoder_layers=s["num_encoder_layers"], num_decoder_layers=s["num_decoder_layers"],
      dropout_rate=s["dropout"], attention_dropout_rate=s["dropout"], attention_bias=True,
      share_embeddings=True, norm_order="post", positional_encoding="sinusoidal")
  return config


def measure_ours(s: dict) -> dict:
  """One workload of ours in this process: median seconds per step or per decoded batch."""
  import jax

  from transformer import benchmark, cpu_devices, decoding_benchmark, op_profile
  from transformer.tasks import get_task
  from transformer.training.validation import trains_on
  profile_dir = s.get("profile_dir", "")
  if profile_dir:
    op_profile.enable_cpu_op_events()  # before the backend starts
  config = run_config(s)
  if s["kind"] == "train":
    cpu_devices.configure(config.get("cpu_devices", "auto"), lambda n: trains_on(config, n),
                          d_model=config.model.d_model)
    r = benchmark.run(config, steps=s["steps"], warmup=s["warmup"], per_step=True,
                      profile_dir=profile_dir)
    times, where, profile = r["step_times"], r["devices"], r["profile"]
  else:
    cpu_devices.configure(config.get("cpu_devices", "auto"), lambda n: s["rows"] % n == 0,
                          collectives=False)
    model = get_task(config).model_config(config, config.vocab_size)
    r = decoding_benchmark.benchmark(model, batch_size=s["rows"], source_length=s["length"],
                                     output_length=s["new_tokens"], beam_sizes=(s["beam_size"],),
                                     length_penalty=s["length_penalty"], repeats=s["steps"],
                                     uncached=False, profile_dir=profile_dir)
    row = next(iter(r["decoding"].values()))
    times, where, profile = row["cached_times"], r["device"], row.get("profile")
  result = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "threads": f"{len(jax.devices())} device(s): {where}",
            "version": f"jax {jax.__version__}"}
  if profile:
    result["profile"] = op_profile.format_table(profile)
  return result


def _spawn(command: list[str]) -> dict:
  env = dict(os.environ, PYTHONPATH=REPO)
  done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
  lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
  if done.returncode or not lines:
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    raise SystemExit(f"benchmarks/peers.py: {' '.join(command[:3])} failed: {tail[0]}")
  return json.loads(lines[-1][len("RESULT "):])


def measure(side: str, name: str, profile_dir: str = "") -> dict:
  s = WORKLOADS[name]
  if side == "ours":
    if profile_dir:
      s = dict(s, profile_dir=profile_dir)
    command = [sys.executable, os.path.join(HERE, "peers.py"), "--worker=ours",
               f"--settings={json.dumps(s)}"]
  else:
    command = [sys.executable, os.path.join(HERE, "torch_peers.py"), s["kind"], json.dumps(s)]
  return _spawn(command)


def units(name: str) -> tuple[float, str]:
  """Work per timed step or call, and its unit."""
  s = WORKLOADS[name]
  if s["kind"] == "train":
    return s["rows"] * 2 * s["length"], "tokens/s"
  return s["rows"], "sentences/s"


def check_peers_installed() -> None:
  missing = [m for m in ("torch", "transformers") if _find(m) is None]
  if missing:
    raise SystemExit(f"benchmarks/peers.py: {' and '.join(missing)} not installed; run "
                     f"`pip install -e \".[peers]\"` (on a CPU-only machine first "
                     f"`pip install torch --index-url https://download.pytorch.org/whl/cpu`).")


def _find(module: str):
  import importlib.util
  return importlib.util.find_spec(module)


def main(argv):
  del argv
  if _WORKER.value:
    print("RESULT " + json.dumps(measure_ours(json.loads(_SETTINGS.value))))
    return
  unknown = [w for w in _WORKLOADS.value if w not in WORKLOADS]
  if unknown:
    raise SystemExit(f"benchmarks/peers.py: --workloads={','.join(unknown)} is unknown; "
                     f"choose from {','.join(WORKLOADS)}.")
  check_peers_installed()
  records = []
  print(f"{'workload':<12}{'pass':>5}  {'side':<6}{'median':>10}{'min-max':>18}{'rate':>12}"
        f"  {'ratio':>6}  threads")
  for p in range(_PASSES.value):
    for name in _WORKLOADS.value:
      work, unit = units(name)
      sides = ("ours", "peer") if p % 2 == 0 else ("peer", "ours")
      profile_dir = (os.path.join(_PROFILE_DIR.value, name, f"pass{p + 1}")
                     if _PROFILE_DIR.value else "")
      got = {side: measure(side, name, profile_dir) for side in sides}
      ratio = got["peer"]["median_s"] / got["ours"]["median_s"]
      for side in ("peer", "ours"):
        r = got[side]
        records.append(dict(workload=name, pass_=p + 1, side=side, unit=unit,
                            rate=work / r["median_s"], **r))
        print(f"{name:<12}{p + 1:>5}  {side:<6}{r['median_s'] * 1e3:>8.0f}ms"
              f"{r['min_s'] * 1e3:>9.0f}-{r['max_s'] * 1e3:<7.0f}ms"
              f"{work / r['median_s']:>10,.1f} {unit if side == 'ours' else '':<12}"
              f"{f'{ratio:.2f}x' if side == 'ours' else '':>6}  {r['threads']} ({r['version']})",
              flush=True)
      if "profile" in got["ours"]:
        print(f"ours, {name}, op by op (thread time per step or call, summed over devices):\n"
              f"{got['ours']['profile']}", flush=True)
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w", encoding="utf-8") as f:
      json.dump(records, f, indent=1)


if __name__ == "__main__":
  app.run(main)
