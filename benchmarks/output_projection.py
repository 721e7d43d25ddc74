r"""Greedy decoding's last operations in three operand orders, on `peers.py`'s greedy shapes.

    python benchmarks/output_projection.py [--rows=64] [--steps=32] [--repeats=9]

Per step of a `lax.fori_loop` (so that nothing is hoisted out of the step, as in the search's
`while_loop`), each device's rows: the output projection onto the tied embedding (vocabulary
8,000, d_model 256, §3.4), the log-softmax parts and the first argmax greedy search takes
(transformer/decoding.py), the chosen token's log-prob fed back. The rows are split over the
JAX devices `cpu_devices="auto"` gives the decoding commands. Three forms, the same values:

  now           logits [rows, V] = x [rows, D] . table [V, D]^T  (what `Embedding.attend` does)
  table [D, V]  the same product with the table stored transposed
  logits [V, rows]  table [V, D] . x^T: the weights as the left operand, reductions over axis 0

Prints milliseconds per step (median and min over the calls) and each form's ratio to "now".
Only the ratios of one run mean anything on a shared machine.
"""

from __future__ import annotations

import time

from absl import app, flags

flags.DEFINE_integer("rows", 64, "Sentences decoded together (split over the devices).")
flags.DEFINE_integer("steps", 32, "Decoding steps a call.")
flags.DEFINE_integer("repeats", 9, "Timed calls of each form.")
FLAGS = flags.FLAGS

VOCAB, D_MODEL = 8000, 256


def forms():
  """name -> (step(x, table) -> x', table layout "VD" or "DV")."""
  import jax.numpy as jnp
  from jax import lax

  from transformer.decoding import _log_softmax_parts, first_argmax

  def feed_back(x, token, log_prob):
    return x + 1e-3 * log_prob + 1e-6 * token[:, None]

  def rows_by_vocab(logits):
    logits, top, log_denominator = _log_softmax_parts(logits)
    token = first_argmax(logits, top)
    picked = jnp.take_along_axis(logits, token[:, None], axis=-1)
    return token, picked - top - log_denominator

  def now(x, table):
    return feed_back(x, *rows_by_vocab(jnp.einsum("bd,vd->bv", x, table)))

  def table_dv(x, table):
    return feed_back(x, *rows_by_vocab(jnp.einsum("bd,dv->bv", x, table)))

  def vocab_by_rows(x, table):
    logits = jnp.einsum("vd,bd->vb", table, x)
    top = jnp.max(logits, axis=0, keepdims=True)
    log_denominator = jnp.log(jnp.sum(jnp.exp(logits - top), axis=0, keepdims=True))
    index = lax.broadcasted_iota(jnp.int32, logits.shape, 0)
    token = jnp.minimum(jnp.min(jnp.where(logits == top, index, VOCAB), axis=0), VOCAB - 1)
    picked = jnp.take_along_axis(logits, token[None, :], axis=0)
    return feed_back(x, token, (picked - top - log_denominator).T)

  return {"now": (now, "VD"), "table [D, V]": (table_dv, "DV"),
          "logits [V, rows]": (vocab_by_rows, "VD")}


def main(argv):
  del argv
  from transformer import cpu_devices
  cpu_devices.configure("auto", lambda n: FLAGS.rows % n == 0, collectives=False)
  import jax
  import numpy as np
  from jax import lax
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  mesh = jax.make_mesh((len(jax.devices()),), ("rows",))
  x = jax.device_put(jax.random.normal(jax.random.key(0), (FLAGS.rows, D_MODEL)),
                     NamedSharding(mesh, P("rows")))
  table = 0.05 * jax.random.normal(jax.random.key(1), (VOCAB, D_MODEL))
  tables = {layout: jax.device_put(t, NamedSharding(mesh, P()))
            for layout, t in (("VD", table), ("DV", table.T))}

  def compiled(step):
    loop = lambda x, table: lax.fori_loop(0, FLAGS.steps, lambda i, x: step(x, table), x)
    return jax.jit(jax.shard_map(loop, mesh=mesh, in_specs=(P("rows"), P()),
                                 out_specs=P("rows")))

  runs = {name: (compiled(step), tables[layout]) for name, (step, layout) in forms().items()}
  outputs = {name: np.asarray(f(x, t)) for name, (f, t) in runs.items()}
  for name, out in outputs.items():  # the same arithmetic up to the order of the sums
    np.testing.assert_allclose(out, outputs["now"], atol=1e-5, err_msg=name)
  times = {name: [] for name in runs}
  for _ in range(FLAGS.repeats):  # the forms alternate, so a slow moment hits them all
    for name, (f, t) in runs.items():
      start = time.perf_counter()
      jax.block_until_ready(f(x, t))
      times[name].append((time.perf_counter() - start) / FLAGS.steps * 1e3)
  print(f"{len(jax.devices())} devices x {FLAGS.rows // len(jax.devices())} rows, vocabulary "
        f"{VOCAB}, d_model {D_MODEL}, {FLAGS.steps} steps a call, {FLAGS.repeats} calls")
  base = np.median(times["now"])
  for name, ms in times.items():
    print(f"{name:18s} median {np.median(ms):6.3f} ms a step (min {min(ms):6.3f}); "
          f"{base / np.median(ms):.2f}x now")


if __name__ == "__main__":
  app.run(main)
