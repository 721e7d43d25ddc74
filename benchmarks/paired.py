"""Two programs timed call by call, alternately, each in its own warm process.

benchmarks/peers.py compares our JAX code with PyTorch and Hugging Face on one CPU. On a shared
machine the pace moves by 20-50% from one minute to the next, so timing one side for half a
minute and then the other measures the machine as much as the code. Here each side runs in a
worker process that compiles and warms up once and then waits; the driver asks the two for one
call at a time, in the order ABBA ABBA..., and a ratio is formed for each pair of adjacent calls,
which share the machine's state of that moment.

Protocol (one line each way; the worker's other output, and its stderr, are ignored):
  worker -> driver   READY <json>        after its warm-up calls; the json describes it
  driver -> worker   run                 one timed call  ->  TIME <seconds>
  driver -> worker   <name> <argument>   a command the worker offers  ->  ANSWER <json>
  driver -> worker   quit                (or the end of stdin)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

# Idle time before each timed call: threads that spin-wait after one side's parallel work
# (OpenMP's, XLA's pool) must not share the cores with the other side's call.
GAP_S = 0.3


def serve(call: Callable[[], Any], *, warmup: int, info: dict,
          commands: dict[str, Callable[[str], Any]] | None = None) -> None:
  """The worker's side: `warmup` untimed calls of `call` (which must return only when its work
  is done), READY, then one request per line of stdin until `quit`."""
  for _ in range(warmup):
    call()
  _say("READY", info)
  for line in sys.stdin:
    name, _, argument = line.strip().partition(" ")
    if name == "quit":
      return
    if name == "run":
      start = time.perf_counter()
      call()
      _say("TIME", time.perf_counter() - start)
    elif commands and name in commands:
      _say("ANSWER", commands[name](argument))
    else:
      raise SystemExit(f"paired.serve: unknown request {line.strip()!r}")


def _say(tag: str, value) -> None:
  sys.stdout.write(f"{tag} {json.dumps(value)}\n")
  sys.stdout.flush()


class Worker:
  """The driver's side of one worker process, started with `command` (it must call `serve`)."""

  def __init__(self, command: Sequence[str], *, env: dict | None = None, cwd: str | None = None):
    self.command = list(command)
    # stderr to a file, not a pipe: a worker that logs much would block on a full pipe.
    self._stderr = tempfile.TemporaryFile(mode="w+")
    self._process = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     env=env, cwd=cwd)
    self.info = self._expect("READY")

  def time_call(self) -> float:
    """Seconds of one call, timed in the worker."""
    self._send("run")
    return float(self._expect("TIME"))

  def ask(self, name: str, argument: str = "") -> Any:
    self._send(f"{name} {argument}")
    return self._expect("ANSWER")

  def close(self) -> None:
    if self._process.poll() is None:
      try:
        self._send("quit")
        self._process.wait(timeout=60)
      except (BrokenPipeError, subprocess.TimeoutExpired):
        self._process.kill()
    self._stderr.close()

  def __enter__(self) -> "Worker":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _send(self, line: str) -> None:
    self._process.stdin.write(line + "\n")
    self._process.stdin.flush()

  def _expect(self, tag: str) -> Any:
    for line in self._process.stdout:
      if line.startswith(tag + " "):
        return json.loads(line[len(tag) + 1:])
    self._process.wait()
    self._stderr.seek(0)
    tail = [ln for ln in self._stderr.read().strip().splitlines() if ln.strip()][-1:]
    raise SystemExit(f"{os.path.basename(self.command[1]) if len(self.command) > 1 else 'worker'}"
                     f" ended (exit {self._process.returncode}) before {tag}: "
                     f"{tail[0] if tail else 'no output'}")


def paired_times(a, b, pairs: int, gap_s: float = GAP_S) -> tuple[list[float], list[float]]:
  """`pairs` timed calls of each of two workers (anything with `time_call()`), adjacent in time:
  a b, b a, a b, ... (who goes first swaps every pair, so that neither side always runs right
  after the other's). Returns the two lists of seconds, pair by pair."""
  times = {id(a): [], id(b): []}
  for i in range(pairs):
    for worker in ((a, b) if i % 2 == 0 else (b, a)):
      time.sleep(gap_s)
      times[id(worker)].append(worker.time_call())
  return times[id(a)], times[id(b)]
