"""cpu_memory: the CPU programs' freed buffers stay in the process, not returned to the OS."""

import platform

import pytest
from test_cpu_devices import _python

from transformer import cpu_memory

GLIBC_LINUX = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# A program whose run needs a 128 MB intermediate ([16384, 2048] float32, 32,768 pages), run 12
# times, 50 ms apart; prints whether the setting was applied and how many runs faulted in fewer
# than 1,000 new pages. (Back to back, a run can start before the last one's buffer is freed, and
# small allocations split freed buffers, so the kept heap grows by a buffer now and then in the
# first runs; the pause makes that rarer here. The default model's training step settled within
# 20 steps, docs/performance.md.)
PROGRAM = """
import resource, time
from transformer import cpu_memory
applied = cpu_memory.keep_freed_memory()
import jax, jax.numpy as jnp
x = jnp.ones((16384, 64)); w = jnp.full((64, 2048), 0.01); v = jnp.ones((2048, 8))
f = jax.jit(lambda x: jnp.tanh(x @ w) @ v)
faults = []
for _ in range(12):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  time.sleep(0.05)
print(applied, sum(n < 1000 for n in faults))
"""


def _runs_without_new_pages(opt_out_value: str) -> tuple[str, int]:
  applied, runs = _python(PROGRAM, **{cpu_memory.OPT_OUT_VARIABLE: opt_out_value})
  return applied, int(runs)


@pytest.mark.skipif(not GLIBC_LINUX, reason="mallopt is glibc's")
def test_a_large_intermediate_is_faulted_in_once_not_on_every_run():
  plain_applied, plain = _runs_without_new_pages("0")
  kept_applied, kept = _runs_without_new_pages("1")
  assert (plain_applied, kept_applied) == ("False", "True")
  assert plain == 0             # glibc maps and unmaps the buffer on every run
  assert kept >= 4              # measured: 5 to 11 of the 12 without the pauses


def test_not_applied_where_an_accelerator_will_run(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
  assert cpu_memory.accelerator_expected()
  assert not cpu_memory._apply()  # pylint: disable=protected-access
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert not cpu_memory.accelerator_expected()


def test_the_opt_out_variable_leaves_malloc_alone(monkeypatch):
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv(cpu_memory.OPT_OUT_VARIABLE, "0")
  assert not cpu_memory._apply()  # pylint: disable=protected-access
