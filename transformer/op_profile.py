"""Where a compiled program's time goes, op by op: a `jax.profiler` trace summed per XLA op.

    op_profile.enable_cpu_op_events()          # on CPU, before JAX starts its backend
    with jax.profiler.trace(log_dir):
      ...the calls to profile...
    table = op_profile.op_table(log_dir, calls=3, hlo_text=compiled.as_text())
    print(op_profile.format_table(table))

Each row is one op of the optimized program (a fusion, a dot, a custom call): its time per call
of the program summed over devices (thread time: two CPU devices running at once give up to
twice the wall time), how often it ran per call, and, from `hlo_text`, what it is (the opcode,
or the library of a library fusion) and the source it came from (the jax op name in its
metadata). Container ops (while, conditional, call) are left out: their time is their body's.

XLA's CPU runtime records its ops only with `--xla_cpu_enable_xprof_traceme=true` in XLA_FLAGS,
read when the backend starts; on GPUs the trace's device events carry the same `hlo_op`.
`python -m transformer.decoding_benchmark --profile_dir=DIR` and `python -m
transformer.benchmark --profile_dir=DIR` print these tables (docs/performance.md).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
from typing import Callable

import jax

CPU_OP_EVENTS_FLAG = "--xla_cpu_enable_xprof_traceme=true"
CONTAINER_OPCODES = ("while", "conditional", "call")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT )?%(?P<name>[^\s=]+) = (?:\([^=]*?\)|\S+) (?P<opcode>[\w-]+)\((?P<rest>.*)$")
_OP_NAME = re.compile(r'op_name="(?P<op_name>[^"]*)"')
_FUSION_KIND = re.compile(r'"kind":"__(?P<kind>\w+)"')


def enable_cpu_op_events() -> None:
  """Asks XLA's CPU runtime to record each op in profiler traces (XLA_FLAGS; it takes effect
  only if JAX's CPU backend has not started yet)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_enable_xprof_traceme" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {CPU_OP_EVENTS_FLAG}".strip()


@dataclasses.dataclass
class OpRow:
  name: str        # the op in the optimized HLO, e.g. "ynn_fusion.1"
  kind: str        # its opcode, or the library of a library fusion ("ynn_fusion")
  source: str      # the jax op it came from (metadata op_name), "" if unknown
  ms_per_call: float
  count_per_call: float

  @property
  def us_each(self) -> float:
    return 1e3 * self.ms_per_call / self.count_per_call if self.count_per_call else 0.0


def hlo_ops(hlo_text: str) -> dict[str, tuple[str, str]]:
  """{op name: (kind, source)} of an optimized HLO module's text (`compiled.as_text()`)."""
  ops = {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    kind = m["opcode"]
    fusion = _FUSION_KIND.search(m["rest"]) if kind == "fusion" else None
    if fusion:
      kind = fusion["kind"]
    op_name = _OP_NAME.search(m["rest"])
    ops[m["name"]] = (kind, op_name["op_name"] if op_name else "")
  return ops


def _trace_events(log_dir: str) -> list[dict]:
  paths = sorted(glob.glob(os.path.join(log_dir, "**", "*.trace.json.gz"), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"No *.trace.json.gz under {log_dir}: was jax.profiler.trace run "
                            "there?")
  with gzip.open(paths[-1]) as f:
    return json.load(f)["traceEvents"]


def module_name(hlo_text: str) -> str:
  """The name on an HLO module text's first line ("HloModule jit_train_step, ...")."""
  m = re.match(r"HloModule ([^\s,]+)", hlo_text)
  if not m:
    raise ValueError("Not the text of an HLO module (compiled.as_text()).")
  return m[1]


def op_table(log_dir: str, *, calls: int, hlo_text: str = "", module: str = "") -> list[OpRow]:
  """Rows for the ops of one program in the newest trace under `log_dir`, which holds `calls`
  calls of it; slowest first. The program is `module` (an HLO module name such as
  "jit_decode_batch", matched as a substring), by default the one `hlo_text` is the text of."""
  known = hlo_ops(hlo_text)
  module = module or module_name(hlo_text)

  def describe(op: str) -> tuple[str, str]:  # (kind, source); unknown ops: the name's stem
    return known.get(op) or (op.split(".")[0], "")

  total = collections.Counter()
  count = collections.Counter()
  for event in _trace_events(log_dir):
    args = event.get("args") or {}
    op = args.get("hlo_op")
    if event.get("ph") != "X" or not op or module not in args.get("hlo_module", ""):
      continue
    if describe(op)[0] in CONTAINER_OPCODES:
      continue
    total[op] += float(event.get("dur", 0.0))
    count[op] += 1
  if not total:
    raise ValueError(f"The trace under {log_dir} has no ops of a module named like {module!r} "
                     f"(on CPU, XLA_FLAGS needs {CPU_OP_EVENTS_FLAG} before JAX starts).")
  rows = [OpRow(op, *describe(op), total[op] / 1e3 / calls, count[op] / calls) for op in total]
  return sorted(rows, key=lambda r: -r.ms_per_call)


def _short_source(source: str) -> str:
  """The jax op name without the jit(...)/ and loop-body prefixes."""
  parts = [p for p in source.split("/") if not p.startswith("jit(")
           and p not in ("while", "body", "cond", "shard_map")]
  return "/".join(parts)


def format_table(rows: list[OpRow], top: int = 20, width: int = 100) -> str:
  """The slowest `top` ops, then the time per kind of op."""
  total = sum(r.ms_per_call for r in rows)
  lines = [f"{'ms/call':>9} {'share':>6} {'runs/call':>9} {'us each':>9}  op (kind): source"]
  for r in rows[:top]:
    what = f"{r.name} ({r.kind}): {_short_source(r.source)}"
    lines.append(f"{r.ms_per_call:9.1f} {r.ms_per_call / total:6.1%} {r.count_per_call:9.0f} "
                 f"{r.us_each:9.0f}  {what[:width]}")
  by_kind = collections.Counter()
  runs = collections.Counter()
  for r in rows:
    by_kind[r.kind] += r.ms_per_call
    runs[r.kind] += r.count_per_call
  lines.append(f"{total:9.1f} ms/call in {sum(runs.values()):.0f} op runs; by kind: " + ", ".join(
      f"{k} {v:.1f} ms ({runs[k]:.0f})" for k, v in by_kind.most_common(8)))
  return "\n".join(lines)


def profile(run: Callable[[], object], calls: int, hlo_text: str, log_dir: str) -> list[OpRow]:
  """Traces `calls` calls of `run` (each waited for) into `log_dir` and returns the op table of
  the program `hlo_text` is the text of."""
  with jax.profiler.trace(log_dir):
    for _ in range(calls):
      jax.block_until_ready(run())
  return op_table(log_dir, calls=calls, hlo_text=hlo_text)
