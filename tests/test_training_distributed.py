"""Multi-device, multi-process and kill/resume runs of the trainer, each in subprocesses.

Every run is `python -m transformer.training.smoke` (a tiny model on a synthetic copy task,
12 steps, a checkpoint every 3) compared with one uninterrupted single-device run.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow

STEPS = 12


def _env():
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONUNBUFFERED"] = "1"
  return env


# Adam's epsilon for every run here. With the default 1e-9, gradients that are zero in exact
# arithmetic but not in floating point (attention key biases: q.b is the same for every key of a
# query, which softmax ignores; the keys' common part in W^K, and with it W^Q) become steps of
# about the learning rate whose sign depends on the summation order, so a sharded run and one
# device parted by up to 0.6 in the key biases and 3.7e-3 in the query and key kernels after 12
# steps (AVX-512 Xeon, 2026-12-03). With 1e-4 every parameter of 8-device FSDP agreed with one
# device to 1.5e-5, and a parameter left unsynchronised or un-updated is off by about the
# learning rate (0.18 at its peak).
ADAM_EPS = 1e-4


def _start(workdir, *args):
  cmd = [sys.executable, "-m", "transformer.training.smoke", f"--workdir={workdir}",
         f"--steps={STEPS}", f"--adam_eps={ADAM_EPS}", *args]
  return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=_env())


def _finish(proc, timeout=240):
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, f"rc={proc.returncode}\n{out}\n{err[-4000:]}"
  return out


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  by_step = {r["step"]: r["loss"] for r in records if r["split"] == "train"}
  return np.array([by_step[s] for s in sorted(by_step)])


def _params(workdir):
  with np.load(os.path.join(workdir, "final_params.npz")) as f:
    return {k: f[k] for k in f.files}


def _assert_params_close(params, ref, name):
  """Every parameter agrees to 2e-4 (ADAM_EPS above says why that is not rounding luck)."""
  assert params.keys() == ref.keys()
  for key in ref:
    np.testing.assert_allclose(params[key], ref[key], atol=2e-4, err_msg=f"{name} {key}")


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
  """One device, uninterrupted."""
  workdir = str(tmp_path_factory.mktemp("baseline"))
  _finish(_start(workdir))
  return workdir


def test_eight_devices_data_parallel_and_fsdp_match_one_device(baseline, tmp_path):
  runs = {name: str(tmp_path / name) for name in ("data", "fsdp")}
  procs = {name: _start(w, "--num_cpu_devices=8", f"--parallelism={name}")
           for name, w in runs.items()}
  for proc in procs.values():
    _finish(proc)
  expected = _losses(baseline)
  assert len(expected) == STEPS and expected[-1] < expected[0]
  for name, workdir in runs.items():
    np.testing.assert_allclose(_losses(workdir), expected, rtol=1e-5, atol=1e-5, err_msg=name)
    _assert_params_close(_params(workdir), _params(baseline), name)


def test_two_processes_with_gloo_train_like_one(baseline, tmp_path):
  workdir = str(tmp_path / "two")
  address = f"127.0.0.1:{free_port()}"
  procs = [_start(workdir, "--num_cpu_devices=2", f"--coordinator_address={address}",
                  "--num_processes=2", f"--process_id={i}") for i in range(2)]
  for proc in procs:
    _finish(proc)
  np.testing.assert_allclose(_losses(workdir), _losses(baseline), rtol=1e-5, atol=1e-5)
  _assert_params_close(_params(workdir), _params(baseline), "two processes")


def _wait_for(path, proc, timeout=180):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert proc.poll() is None, f"run ended before {path} appeared: {proc.communicate()}"
    assert time.time() < deadline, f"{path} did not appear"
    time.sleep(0.05)


def test_sigkill_mid_run_then_resume_gives_exactly_the_uninterrupted_parameters(
    baseline, tmp_path):
  workdir = str(tmp_path / "killed")
  proc = _start(workdir, "--batch_delay=0.4")
  _wait_for(os.path.join(workdir, "checkpoints", "6"), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(workdir, "final_params.npz"))
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert 6 in steps and max(steps) < STEPS

  out = _finish(_start(workdir))
  assert f"FINISHED {STEPS}" in out
  params, ref = _params(workdir), _params(baseline)
  assert params.keys() == ref.keys()
  for key in ref:
    np.testing.assert_array_equal(params[key], ref[key], err_msg=key)


def test_sigterm_saves_the_step_it_stopped_at(tmp_path):
  workdir = str(tmp_path / "preempted")
  proc = _start(workdir, "--batch_delay=0.4", "--checkpoint_every=100")
  _wait_for(os.path.join(workdir, "metrics.jsonl"), proc)  # the first step has run
  time.sleep(1.0)
  proc.send_signal(signal.SIGTERM)
  out = _finish(proc)
  stopped = int(out.split("STOPPED ")[1].split()[0])
  assert 1 <= stopped < STEPS
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert steps == [stopped]


def test_two_processes_with_a_time_budget_stop_at_the_same_step(tmp_path):
  """`train_minutes` with two processes, process 1's clock running twice as fast: alone it would
  fix half the count and reach its deadline first, leaving process 0 waiting in a collective.
  Both take process 0's count and deadline, so they end at the same step, the one recorded."""
  workdir = str(tmp_path / "budget")
  address = f"127.0.0.1:{free_port()}"
  procs = [_start(workdir, "--num_cpu_devices=2", f"--coordinator_address={address}",
                  "--num_processes=2", f"--process_id={i}", "--train_minutes=0.75",
                  f"--budget_clock_rate={1 + i}", "--batch_delay=0.05",
                  "--checkpoint_every=100000") for i in range(2)]
  ends = [int(_finish(proc).split("BUDGET ")[1].split()[0]) for proc in procs]
  with open(os.path.join(workdir, "train_budget.json")) as f:
    record = json.load(f)
  assert ends[0] == ends[1] == record.get("stopped_at_step", record["num_train_steps"])
  assert ends[0] > record["calibrated_at_step"]
