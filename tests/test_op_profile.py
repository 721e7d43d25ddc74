"""transformer/op_profile.py: a real trace of a small program, summed op by op.

XLA's CPU runtime records ops only when XLA_FLAGS asks before the backend starts, so the traced
program runs in a fresh process."""

import gzip
import json
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from transformer import op_profile

ITERATIONS = 7
CALLS = 3
SCRIPT = textwrap.dedent(f"""
    import json, sys
    from transformer import op_profile
    op_profile.enable_cpu_op_events()
    import jax, jax.numpy as jnp

    @jax.jit
    def program(x, w):
      return jax.lax.fori_loop(0, {ITERATIONS}, lambda i, x: jnp.tanh(x @ w), x)

    x, w = jnp.ones((64, 128)), jnp.full((128, 128), 0.01)
    hlo_text = program.lower(x, w).compile().as_text()
    program(x, w).block_until_ready()
    rows = op_profile.profile(lambda: program(x, w), {CALLS}, hlo_text, sys.argv[1])
    print(json.dumps([[r.name, r.kind, r.source, r.ms_per_call, r.count_per_call] for r in rows]))
    print(op_profile.format_table(rows))
""")


def test_a_traced_loop_is_summed_per_op(tmp_path):
  run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                       text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  rows = json.loads(run.stdout.splitlines()[0])
  assert rows, run.stdout
  # The loop body's matmul runs once per iteration of each call, and is named after its source.
  body = [r for r in rows if r[4] == ITERATIONS and "dot_general" in r[2]]
  assert body, rows
  assert all(r[3] > 0 for r in rows)
  assert not [r for r in rows if r[1] in op_profile.CONTAINER_OPCODES]  # their time is the body's
  assert "ms/call in" in run.stdout  # the table's summary line


def test_hlo_ops_reads_every_instruction_with_its_kind_and_source():
  f = jax.jit(lambda x: jnp.sort(jnp.exp(x) @ x.T, axis=-1))
  text = f.lower(jnp.ones((8, 8))).compile().as_text()
  names = set(re.findall(r"^\s*(?:ROOT )?%([^\s=]+) = ", text, flags=re.M))
  ops = op_profile.hlo_ops(text)
  assert set(ops) == names
  kinds = {kind for kind, _ in ops.values()}
  assert "parameter" in kinds and kinds & {"sort", "custom-call"}
  assert any(src.endswith(("sort", "exp", "dot_general")) for _, src in ops.values())
  assert text.startswith(f"HloModule {op_profile.module_name(text)},")


def test_missing_traces_and_modules_say_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match="jax.profiler.trace"):
    op_profile.op_table(str(tmp_path), calls=1, module="jit_x")
  with pytest.raises(ValueError, match="HLO module"):
    op_profile.module_name("not hlo")
  # A trace of another program only: the error names the XLA flag CPU traces need.
  trace = tmp_path / "plugins" / "profile" / "run" / "host.trace.json.gz"
  trace.parent.mkdir(parents=True)
  event = {"ph": "X", "name": "dot.1", "dur": 5.0,
           "args": {"hlo_op": "dot.1", "hlo_module": "jit_other"}}
  with gzip.open(trace, "wt") as f:
    json.dump({"traceEvents": [event]}, f)
  with pytest.raises(ValueError, match="xla_cpu_enable_xprof_traceme"):
    op_profile.op_table(str(tmp_path), calls=1, module="jit_decode_batch")
  assert op_profile.op_table(str(tmp_path), calls=2, module="jit_other")[0].ms_per_call == 0.0025
