r"""This project beside PyTorch and Hugging Face on one CPU: training steps and decoding.

    pip install -e ".[peers]"   # torch and transformers; on a CPU-only machine install torch's
                                # CPU wheel first (docs/performance.md)
    python benchmarks/peers.py [--passes=2] [--workloads=train_small,train_base,greedy,beam4]
                               [--output=peers.json] [--profile_dir=DIR]

Workloads (the shapes of issue 14), each with issue 14's target ratio:
  train_small  d_model 256, 3+3 layers, d_ff 1024, 8 heads, vocabulary 8,000, shared embeddings,
               dropout 0.1, a batch of 64 x (32 source + 32 target) tokens; tokens/s; 1.25x.
  train_base   d_model 512, 6+6 layers, d_ff 2048, 8 heads, vocabulary 32,000, 16 x (64 + 64);
               1.15x.
  greedy/beam4 the small model, random weights, 64 random sources of 32 tokens, exactly 32 new
               tokens each (EOS never chosen); sentences/s; 2x each.
The peers: `torch.nn.Transformer` with a tied, scaled embedding, sinusoidal positions, label-
smoothed cross-entropy and Adam (benchmarks/torch_peers.py), and Hugging Face `MarianMTModel`'s
`generate` (the paper's architecture in transformers) with `min_new_tokens = max_new_tokens`.
Ours: the train step `train.py` runs (transformer/benchmark.py, one JAX device per core as
`config.cpu_devices="auto"` gives) and the decoding `translate` runs
(transformer/decoding_benchmark.py; EOS disabled). Both sides have attention biases and dropout
0.1 on attention weights as well (torch.nn.Transformer's), label smoothing 0.1, no padding.

Each pass starts both sides afresh, each in its own process (benchmarks/paired.py): ours compiles
and warms up, then the peer, and then the two are timed call by call, alternately (ABBA...), so
that each pair of calls shares the machine's state of that moment. A pass prints each side's
median and spread (min-max) over its calls and the threads it used, and the ratio: ours over the
peer in tokens/s or sentences/s, the median over the pairs of the peer's time over ours, with the
pairs' spread and whether it reaches the target. The last lines give each workload's ratio in
every pass.
"""

from __future__ import annotations

import json
import os
import statistics
import sys

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)  # benchmarks/paired.py, also when this file is loaded by path
from paired import Worker, paired_times, serve  # noqa: E402

SMALL = dict(d_model=256, d_ff=1024, num_heads=8, num_encoder_layers=3, num_decoder_layers=3,
             vocab_size=8000, dropout=0.1, label_smoothing=0.1)
BASE = dict(SMALL, d_model=512, d_ff=2048, num_encoder_layers=6, num_decoder_layers=6,
            vocab_size=32000)
WORKLOADS = {
    "train_small": dict(SMALL, kind="train", rows=64, length=32, warmup=2, pairs=10,
                        target=1.25),
    "train_base": dict(BASE, kind="train", rows=16, length=64, warmup=1, pairs=5, target=1.15),
    "greedy": dict(SMALL, kind="decode", rows=64, length=32, new_tokens=32, beam_size=1,
                   length_penalty=0.6, warmup=1, pairs=7, target=2.0),
    "beam4": dict(SMALL, kind="decode", rows=64, length=32, new_tokens=32, beam_size=4,
                  length_penalty=0.6, warmup=1, pairs=5, target=2.0),
}

_PASSES = flags.DEFINE_integer("passes", 2, "Times each workload is measured, afresh.")
_WORKLOADS = flags.DEFINE_list("workloads", list(WORKLOADS), "Which workloads to run.")
_OUTPUT = flags.DEFINE_string("output", "", "Write every measurement here as JSON.")
_WORKER = flags.DEFINE_string("worker", "", "Internal: serve one workload of ours ('ours').")
_SETTINGS = flags.DEFINE_string("settings", "", "Internal: the workload's settings as JSON.")
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir", "", "Also trace our side of each workload there (DIR/WORKLOAD/passN), after "
    "its timed calls, and print where its time goes, op by op (transformer/op_profile.py).")


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


def prepare_ours(s: dict):
  """One workload of ours in this process: (call, info, profile). `call` runs one training step
  or one decoding of the batch and returns when it is done; `profile(dir)` traces a few more
  calls there and returns their op table as text (op events need `s["profile"]` set before the
  backend starts)."""
  import jax

  from transformer import benchmark, cpu_devices, decoding_benchmark, op_profile
  from transformer.tasks import get_task
  from transformer.training import sharding
  from transformer.training.validation import trains_on
  if s.get("profile"):
    op_profile.enable_cpu_op_events()  # before the backend starts
  config = run_config(s)
  if s["kind"] == "train":
    cpu_devices.configure(config.get("cpu_devices", "auto"), lambda n: trains_on(config, n),
                          d_model=config.model.d_model)
    step = benchmark.TrainStep(config)
    raw, hlo_text = step, step.compiled.as_text
    call = lambda: jax.block_until_ready((step(), step.state))
    where = sharding.describe(step.mesh)
  else:
    cpu_devices.configure(config.get("cpu_devices", "auto"), lambda n: s["rows"] % n == 0,
                          collectives=False)
    model = get_task(config).model_config(config, config.vocab_size)
    batch = decoding_benchmark.RandomBatch.make(
        model, batch_size=s["rows"], source_length=s["length"], output_length=s["new_tokens"])
    raw = batch.search(beam_size=s["beam_size"], length_penalty=s["length_penalty"])
    hlo_text = raw.func.as_text
    call = lambda: jax.block_until_ready(raw())
    where = batch.device

  def profile(log_dir: str) -> str:
    rows = op_profile.profile(raw, min(s["pairs"], 5), hlo_text(), log_dir)
    return op_profile.format_table(rows)

  info = {"threads": f"{len(jax.devices())} device(s): {where}",
          "version": f"jax {jax.__version__}"}
  return call, info, profile


def _spawn(command: list[str]) -> Worker:
  return Worker(command, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)


def start(side: str, s: dict) -> Worker:
  """A warm worker process of one side ("ours" or "peer") for the workload settings `s`."""
  if side == "ours":
    return _spawn([sys.executable, os.path.join(HERE, "peers.py"), "--worker=ours",
                   f"--settings={json.dumps(s)}"])
  return _spawn([sys.executable, os.path.join(HERE, "torch_peers.py"), s["kind"], json.dumps(s)])


def summarize(ours: list[float], peer: list[float]) -> dict:
  """The ratio of one pass from its paired calls: ours over the peer in rate, that is the
  peer's seconds over ours, pair by pair; its median and spread."""
  ratios = [p / o for o, p in zip(ours, peer)]
  return {"ratio": statistics.median(ratios), "ratio_min": min(ratios),
          "ratio_max": max(ratios), "pair_ratios": ratios}


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
    settings = json.loads(_SETTINGS.value)
    call, info, profile = prepare_ours(settings)
    serve(call, warmup=settings["warmup"], info=info, commands={"profile": profile})
    return
  unknown = [w for w in _WORKLOADS.value if w not in WORKLOADS]
  if unknown:
    raise SystemExit(f"benchmarks/peers.py: --workloads={','.join(unknown)} is unknown; "
                     f"choose from {','.join(WORKLOADS)}.")
  check_peers_installed()
  records, by_workload = [], {name: [] for name in _WORKLOADS.value}
  print(f"{'workload':<12}{'pass':>5}  {'side':<6}{'median':>10}{'min-max':>18}{'rate':>12}"
        f"  {'':<12}threads")
  for p in range(_PASSES.value):
    for name in _WORKLOADS.value:
      s = WORKLOADS[name]
      work, unit = units(name)
      with start("ours", dict(s, profile=bool(_PROFILE_DIR.value))) as ours, \
           start("peer", s) as peer:
        times = dict(zip(("ours", "peer"), paired_times(ours, peer, s["pairs"])))
        info = {"ours": ours.info, "peer": peer.info}
        profile = (ours.ask("profile", os.path.join(_PROFILE_DIR.value, name, f"pass{p + 1}"))
                   if _PROFILE_DIR.value else None)
      ratio = summarize(times["ours"], times["peer"])
      by_workload[name].append(ratio["ratio"])
      for side in ("peer", "ours"):
        t = times[side]
        median = statistics.median(t)
        records.append(dict(workload=name, pass_=p + 1, side=side, unit=unit, rate=work / median,
                            median_s=median, min_s=min(t), max_s=max(t), times_s=t, **info[side]))
        print(f"{name:<12}{p + 1:>5}  {side:<6}{median * 1e3:>8.0f}ms{min(t) * 1e3:>9.0f}-"
              f"{max(t) * 1e3:<7.0f}ms{work / median:>10,.1f} {unit:<12}  {info[side]['threads']}"
              f" ({info[side]['version']})", flush=True)
      met = "reached" if ratio["ratio"] >= s["target"] else "not reached"
      records.append(dict(workload=name, pass_=p + 1, side="ratio", target=s["target"], **ratio))
      print(f"{name:<12}{p + 1:>5}  {'ratio':<6}{ratio['ratio']:>9.2f}x  (over {s['pairs']} pairs "
            f"{ratio['ratio_min']:.2f}-{ratio['ratio_max']:.2f}x; target {s['target']:.2f}x "
            f"{met})", flush=True)
      if profile:
        print(f"ours, {name}, op by op (thread time per step or call, summed over devices):\n"
              f"{profile}", flush=True)
  print("\nratio by pass (ours over the peer, median of the paired calls):")
  for name, ratios in by_workload.items():
    target = WORKLOADS[name]["target"]
    print(f"  {name:<12} {' / '.join(f'{r:.2f}x' for r in ratios):<30} target {target:.2f}x: "
          f"reached in {sum(r >= target for r in ratios)} of {len(ratios)}")
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w", encoding="utf-8") as f:
      json.dump(records, f, indent=1)


if __name__ == "__main__":
  app.run(main)
