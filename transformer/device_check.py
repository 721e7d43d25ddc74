"""The accelerator check: one command that says what the training step does on this device.

    python -m transformer.device_check                  # GPU or TPU: the recipes' shapes
    python -m transformer.device_check --out=DIR        # also DIR/device_check.jsonl
    python -m transformer.device_check --small          # reduced shapes (what CI runs on CPU)

It prints, in order (each line as soon as it is measured, so a cut-off run keeps what it had):
1. Kernels against the reference: every fused attention kernel this platform runs (see
   transformer/attention_kernels.py) on padded, causal, cross and packed calls, outputs and
   gradients against the float32 einsum reference on the same inputs (relative error over real
   query positions), and each kernel's forward+backward time on a base-sized packed call.
2. Train steps: the paper's base and big models in bfloat16 at the recipes' batch (about 25,000
   real source and 25,000 real target tokens: 390 full rows of 64, or packed rows of 256), each
   with the attention kernel "auto" picked, compile seconds cold and from JAX's persistent
   compilation cache, step time, tokens/s, MFU against the peak it names
   (transformer/training/flops.py), and device memory (XLA's plan for the step and the
   allocator's peak so far).

Batches are synthetic (random tokens): speed does not depend on the values. Needs only jax,
flax, optax and numpy, so it runs on a bare accelerator image.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from transformer import attention_kernels, compilation_cache
from transformer import config as model_presets
from transformer.attention import scaled_dot_product_attention
from transformer.attention_kernels import AttentionCall, AttentionMask
from transformer.compile_benchmark import planned_bytes, recipe_step
from transformer.training.flops import peak_flops_per_device, train_step_flops


@dataclasses.dataclass(frozen=True)
class StepCase:
  """One train-step measurement: a model preset, a batch shape and the model options."""
  name: str
  preset: str
  rows: int
  length: int
  packed: bool = False
  overrides: tuple = ()  # TransformerConfig fields, as (name, value) pairs


def recipe_cases() -> list[StepCase]:
  """The recipes' batch (§5.1: ~25,000 real tokens per side) for base and big, bfloat16."""
  bf16 = (("dtype", "bfloat16"), ("attention_impl", "auto"))
  return [
      StepCase("base", "base", rows=390, length=64, overrides=bf16),
      StepCase("base packed", "base", rows=98, length=256, packed=True, overrides=bf16),
      StepCase("base scanned", "base", rows=390, length=64,
               overrides=bf16 + (("scan_layers", True),)),
      StepCase("base xla attention", "base", rows=390, length=64,
               overrides=(("dtype", "bfloat16"), ("attention_impl", "xla"))),
      StepCase("base without dropout", "base", rows=390, length=64,
               overrides=bf16 + (("dropout_rate", 0.0),)),
      StepCase("big", "big", rows=390, length=64, overrides=bf16),
  ]


def small_cases() -> list[StepCase]:
  """Reduced shapes for a CPU: the same code paths in seconds."""
  small = (("d_model", 64), ("d_ff", 128), ("num_heads", 4), ("num_encoder_layers", 2),
           ("num_decoder_layers", 2), ("vocab_size", 256), ("attention_impl", "auto"))
  return [
      StepCase("small", "base", rows=8, length=32, overrides=small),
      StepCase("small packed scanned", "base", rows=4, length=64, packed=True,
               overrides=small + (("scan_layers", True),)),
  ]


def _emit(record: dict, out_path: str | None) -> None:
  if out_path:
    with open(out_path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record, default=str) + "\n")


def _segments(rows: int, length: int, packed: bool, rng: np.random.Generator) -> np.ndarray:
  """Padded rows (one segment, then padding) or packed rows (several segments, then padding)."""
  segments = np.zeros((rows, length), np.int32)
  for r in range(rows):
    if not packed:
      segments[r, :rng.integers(length // 2, length + 1)] = 1
      continue
    position, segment = 0, 1
    while position < length - 4:
      size = int(rng.integers(4, max(5, length // 3)))
      segments[r, position:position + size] = segment
      position, segment = position + size, segment + 1
    segments[r, min(position, length):] = 0
  return segments


def _relative_error(got, ref, where) -> float:
  got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
  diff = np.linalg.norm((got - ref)[where])
  return float(diff / max(np.linalg.norm(ref[where]), 1e-30))


def kernel_calls(small: bool) -> list[tuple[str, dict]]:
  """(name, shapes) of the attention calls each kernel is checked on."""
  length = 128 if small else 256
  return [
      ("padded self", dict(q_len=length, k_len=length, causal=False, packed=False)),
      ("padded causal", dict(q_len=length, k_len=length, causal=True, packed=False)),
      ("padded cross", dict(q_len=length // 2, k_len=length, causal=False, packed=False)),
      ("packed causal", dict(q_len=length, k_len=length, causal=True, packed=True)),
  ]


def check_kernel(kernel: str, shapes: dict, *, dtype: str, rows: int, heads: int, depth: int,
                 seed: int = 0, interpret: bool = False) -> dict:
  """Outputs and gradients of `kernel` vs the float32 einsum reference on the same inputs."""
  rng = np.random.default_rng(seed)
  q_len, k_len = shapes["q_len"], shapes["k_len"]
  q_seg = _segments(rows, q_len, shapes["packed"], rng)
  k_seg = q_seg if q_len == k_len else _segments(rows, k_len, False, rng)
  mask = AttentionMask(jnp.asarray(q_seg), jnp.asarray(k_seg), causal=shapes["causal"],
                       packed=shapes["packed"])
  dt = model_presets.DTYPES[dtype]
  q, k, v = (jnp.asarray(rng.standard_normal((rows, n, heads, depth)), dt)
             for n in (q_len, k_len, k_len))
  cotangent = jnp.asarray(rng.standard_normal((rows, q_len, heads, depth)), jnp.float32)
  real = (q_seg != 0)[:, :, None, None] & np.ones((1, 1, heads, depth), bool)
  # Queries with no key to see (padding) are undefined and differ between kernels: left out.
  real_mask = jnp.asarray(real, jnp.float32)

  def loss(fn, q, k, v):
    return jnp.sum(fn(q, k, v).astype(jnp.float32) * cotangent * real_mask)

  if kernel in ("pallas_gpu", "splash"):
    fn = functools.partial(attention_kernels.FUSED[kernel], mask=mask, interpret=interpret)
  else:
    fn = functools.partial(scaled_dot_product_attention, mask=mask, implementation=kernel)
  ref_fn = functools.partial(scaled_dot_product_attention, mask=mask, implementation="einsum")
  out, grads = jax.jit(jax.value_and_grad(lambda *a: (loss(fn, *a), fn(*a))[0],
                                          argnums=(0, 1, 2)))(q, k, v)
  got_out = jax.jit(fn)(q, k, v)
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  ref_out = ref_fn(*f32)
  ref_grads = jax.grad(lambda *a: loss(ref_fn, *a), argnums=(0, 1, 2))(*f32)
  del out
  grad_errors = [_relative_error(g, r, np.ones(r.shape, bool)) for g, r in zip(grads, ref_grads)]
  return {"output_rel_err": _relative_error(got_out, ref_out, real),
          "grad_rel_err": max(grad_errors)}


def time_kernel(kernel: str, *, dtype: str, rows: int, length: int, heads: int, depth: int,
                repeats: int = 20) -> float:
  """Seconds per forward+backward of a packed causal self-attention call (median)."""
  rng = np.random.default_rng(1)
  seg = jnp.asarray(_segments(rows, length, True, rng))
  mask = AttentionMask(seg, seg, causal=True, packed=True)
  dt = model_presets.DTYPES[dtype]
  q, k, v = (jnp.asarray(rng.standard_normal((rows, length, heads, depth)), dt) for _ in range(3))
  fn = functools.partial(scaled_dot_product_attention, mask=mask, implementation=kernel)
  step = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32)),
                          argnums=(0, 1, 2)))
  jax.block_until_ready(step(q, k, v))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(step(q, k, v))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _batch(case: StepCase, vocab_size: int, seed: int = 0) -> dict:
  """A batch in the pipeline's format: full rows, or packed rows with segment ids/positions."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, vocab_size, size=(case.rows, case.length), dtype=np.int32)
  if not case.packed:
    return {"inputs": tokens, "targets": tokens.copy()}
  segments = np.ones((case.rows, case.length), np.int32)
  positions = np.zeros_like(segments)
  for r in range(case.rows):  # four pairs per row, every position real (as dense packing)
    bounds = np.linspace(0, case.length, 5).astype(int)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
      segments[r, a:b] = i + 1
      positions[r, a:b] = np.arange(b - a)
  return {"inputs": tokens, "targets": tokens.copy(), "inputs_segmentation": segments,
          "targets_segmentation": segments.copy(), "inputs_position": positions,
          "targets_position": positions.copy()}


def measure_step(case: StepCase, *, steps: int, warmup: int) -> dict:
  """Compiles (cold, then from the persistent cache) and times one train step."""
  preset = getattr(model_presets, case.preset)
  model_config = preset(max_length=max(256, case.length), **dict(case.overrides))
  init, step_fn = recipe_step(model_config)
  state = jax.jit(init)(jax.random.PRNGKey(0))
  batch = jax.device_put(_batch(case, model_config.vocab_size))
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  cold_s = time.perf_counter() - t0
  jax.clear_caches()  # drop the in-memory caches: the next compile reads the disk cache
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  cached_s = time.perf_counter() - t0

  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - t0) / steps

  kernel_call = AttentionCall(
      platform=jax.default_backend(), dtype=model_config.dtype, head_dim=model_config.head_dim,
      q_len=case.length, k_len=case.length, causal=True, packed=case.packed,
      gpu_compute_capability=attention_kernels.compute_capability())
  flops = train_step_flops(model_config, rows=case.rows, source_len=case.length,
                           target_len=case.length)
  peak, peak_text = peak_flops_per_device(jax.devices()[0], model_config.dtype)
  planned = planned_bytes(compiled)
  stats = jax.devices()[0].memory_stats() or {}
  tokens = 2 * case.rows * case.length
  return {
      "case": case.name, "params": int(sum(x.size for x in jax.tree.leaves(state.params))),
      "batch": f"{case.rows} x {case.length}" + (" packed" if case.packed else ""),
      "tokens_per_step": tokens, "dtype": model_config.dtype,
      "attention": attention_kernels.choose_kernel(model_config.attention_impl, kernel_call)[0],
      "scan_layers": model_config.scan_layers,
      "compile_cold_s": cold_s, "compile_cached_s": cached_s, "step_s": step_s,
      "tokens_per_s": tokens / step_s, "tflops_per_s": flops / step_s / 1e12,
      "mfu": flops / step_s / peak if peak else None, "peak": peak_text,
      "planned_bytes": planned, "allocator_peak_bytes": stats.get("peak_bytes_in_use"),
      "loss": float(metrics["loss_sum"] / metrics["tokens"]),
  }


def platform_kernels(platform: str, small: bool) -> list[tuple[str, bool]]:
  """(kernel, interpret) pairs to check: the platform's own, or all of them interpreted on CPU."""
  if platform == "gpu":
    return [("xla", False), ("cudnn", False), ("pallas_gpu", False)]
  if platform == "tpu":
    return [("xla", False), ("splash", False)]
  return [("xla", False)] + ([("pallas_gpu", True), ("splash", True)] if small else [])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--small", action="store_true", help="reduced shapes (default on CPU)")
  parser.add_argument("--out", default="", help="folder for device_check.jsonl")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
  parser.add_argument("--skip_kernels", action="store_true", help="train steps only")
  parser.add_argument("--cache_dir", default="", help="compilation cache (default: a new temp dir)")
  args = parser.parse_args(argv)

  platform = jax.default_backend()
  small = args.small or platform == "cpu"
  out_path = os.path.join(args.out, "device_check.jsonl") if args.out else None
  if args.out:
    os.makedirs(args.out, exist_ok=True)
  cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="jax_cache_")
  compilation_cache.enable(cache_dir)
  device = jax.devices()[0]
  header = {"device": device.device_kind, "platform": platform, "count": jax.device_count(),
            "jax": jax.__version__, "small": small, "compilation_cache": cache_dir}
  print(f"device: {jax.device_count()} x {device.device_kind} ({platform}), jax {jax.__version__}"
        f"{', reduced shapes' if small else ''}; compilation cache {cache_dir}", flush=True)
  _emit(header, out_path)

  dtype = "float32" if platform == "cpu" else "bfloat16"
  tolerance = 1e-4 if dtype == "float32" else 2e-2
  rows, heads, depth = (2, 2, 16) if small else (8, 8, 64)
  print(f"\nkernels vs the float32 einsum reference ({dtype} inputs, {rows} rows, {heads} heads "
        f"of {depth}; pass below {tolerance:g} relative error)", flush=True)
  failures = 0
  for kernel, interpret in [] if args.skip_kernels else platform_kernels(platform, small):
    for name, shapes in kernel_calls(small):
      call = AttentionCall(platform=platform, dtype=dtype, head_dim=depth, **shapes,
                           gpu_compute_capability=attention_kernels.compute_capability())
      if interpret:  # judged as on the platform the kernel is written for
        call = dataclasses.replace(call, platform="tpu" if kernel == "splash" else "gpu",
                                   dtype="bfloat16", gpu_compute_capability=9.0)
      reason = attention_kernels.unsupported_reason(kernel, call)
      record = {"kernel": kernel, "call": name, "interpret": interpret}
      if reason:
        record["skipped"] = reason
        print(f"  {kernel:<11} {name:<14} not served: {reason}", flush=True)
      else:
        try:
          record.update(check_kernel(kernel, shapes, dtype=dtype, rows=rows, heads=heads,
                                     depth=depth, interpret=interpret))
          ok = record["output_rel_err"] < tolerance and record["grad_rel_err"] < tolerance
          failures += not ok
          print(f"  {kernel:<11} {name:<14} output {record['output_rel_err']:.2e}  "
                f"gradients {record['grad_rel_err']:.2e}  {'ok' if ok else 'FAIL'}", flush=True)
        except Exception as e:  # pylint: disable=broad-except
          failures += 1
          record["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
          print(f"  {kernel:<11} {name:<14} ERROR {record['error']}", flush=True)
      _emit(record, out_path)

  if not small and not args.skip_kernels:
    print("\nattention forward+backward, packed causal, 98 x 256, 8 heads of 64:", flush=True)
    for kernel in ["einsum"] + [k for k, _ in platform_kernels(platform, small)]:
      call = AttentionCall(platform=platform, dtype=dtype, head_dim=64, q_len=256, k_len=256,
                           causal=True, packed=True)
      if attention_kernels.unsupported_reason(kernel, call):
        continue
      try:
        seconds = time_kernel(kernel, dtype=dtype, rows=98, length=256, heads=8, depth=64)
        print(f"  {kernel:<11} {seconds * 1e3:8.3f} ms", flush=True)
        _emit({"kernel_time": kernel, "seconds": seconds}, out_path)
      except Exception as e:  # pylint: disable=broad-except
        print(f"  {kernel:<11} ERROR {type(e).__name__}: {str(e).splitlines()[0][:200]}",
              flush=True)

  cases = small_cases() if small else recipe_cases()
  if args.cases:
    wanted = {c.strip() for c in args.cases.split(",")}
    cases = [c for c in cases if c.name in wanted]
  print("\ntrain steps (synthetic batches; tokens = source + target positions, all real):",
        flush=True)
  for case in cases:
    try:
      r = measure_step(case, steps=args.steps, warmup=args.warmup)
    except Exception as e:  # pylint: disable=broad-except
      failures += 1
      print(f"  {case.name}: ERROR {type(e).__name__}: {str(e).splitlines()[0][:300]}", flush=True)
      _emit({"case": case.name, "error": repr(e)[:1000]}, out_path)
      continue
    _emit(r, out_path)
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "unknown"
    planned = f"{r['planned_bytes'] / 2**30:.2f} GiB" if r["planned_bytes"] else "unknown"
    allocator = (f"{r['allocator_peak_bytes'] / 2**30:.2f} GiB" if r["allocator_peak_bytes"]
                 else "unknown")
    print(f"  {r['case']}: {r['params']:,} params, batch {r['batch']}, {r['dtype']}, attention "
          f"{r['attention']}{', scanned' if r['scan_layers'] else ''}\n"
          f"    compile {r['compile_cold_s']:.1f} s cold, {r['compile_cached_s']:.1f} s cached; "
          f"step {r['step_s'] * 1e3:.1f} ms; {r['tokens_per_s']:,.0f} tokens/s; "
          f"{r['tflops_per_s']:.1f} TFLOP/s; MFU {mfu} (peak {r['peak']})\n"
          f"    memory: step plan {planned}, allocator peak so far {allocator}; "
          f"loss {r['loss']:.3f}", flush=True)
  print(f"\n{'all checks passed' if not failures else f'{failures} check(s) failed'}", flush=True)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
