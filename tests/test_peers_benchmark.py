"""benchmarks/peers.py: our side of each workload, and its one-line errors. The peers themselves
(torch, transformers) are not installed by the test extra and are not run here."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks", "peers.py")
spec = importlib.util.spec_from_file_location("peers", PATH)
peers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peers)

TINY = dict(d_model=16, d_ff=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
            vocab_size=50, dropout=0.1, label_smoothing=0.1, rows=4, length=8, warmup=1,
            steps=3)


def test_the_run_config_has_the_workloads_shapes():
  for name in ("train_small", "train_base"):
    s = peers.WORKLOADS[name]
    config = peers.run_config(s)
    assert (config.batch_size, config.max_length, config.vocab_size) == (
        s["rows"], s["length"], s["vocab_size"])
    assert (config.model.d_model, config.model.num_encoder_layers, config.model.dropout_rate,
            config.model.attention_dropout_rate) == (s["d_model"], s["num_encoder_layers"],
                                                     0.1, 0.1)
  assert peers.units("train_small") == (64 * 64, "tokens/s")
  assert peers.units("beam4") == (64, "sentences/s")


@pytest.mark.parametrize("kind, extra", [
    ("train", {}), ("decode", dict(new_tokens=5, beam_size=2, length_penalty=0.6))])
def test_our_side_measures_a_workload(kind, extra):
  r = peers.measure_ours(dict(TINY, kind=kind, **extra))
  assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
  assert r["version"].startswith("jax ") and "device" in r["threads"]


@pytest.mark.parametrize("kind, extra", [
    ("train", {}), ("decode", dict(new_tokens=5, beam_size=2, length_penalty=0.6))])
def test_our_side_profiles_a_workload_op_by_op(kind, extra, tmp_path):
  # As `--profile_dir` runs it: a fresh worker process (XLA's CPU op events need a new backend).
  settings = dict(TINY, kind=kind, profile_dir=str(tmp_path), **extra)
  command = [sys.executable, PATH, "--worker=ours", f"--settings={json.dumps(settings)}"]
  run = subprocess.run(command, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(PATH))))
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(run.stdout.split("RESULT ", 1)[1])
  table = result["profile"].splitlines()
  assert table[0].split()[:3] == ["ms/call", "share", "runs/call"] and len(table) > 2
  assert "ms/call in" in table[-1]


def test_missing_peers_are_named_in_one_line(monkeypatch):
  monkeypatch.setattr(peers, "_find", lambda module: None)
  with pytest.raises(SystemExit, match=r"torch and transformers not installed; run "
                                       r"`pip install -e \"\.\[peers\]\"`"):
    peers.check_peers_installed()
