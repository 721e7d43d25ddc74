"""benchmarks/peers.py and benchmarks/paired.py: our side of each workload as a worker process,
the paired timing and its ratio, and their one-line errors. The peers themselves (torch,
transformers) are not installed by the test extra and are not run here."""

import importlib.util
import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")


def load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


peers = load("peers")
paired = load("paired")

TINY = dict(d_model=16, d_ff=32, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
            vocab_size=50, dropout=0.1, label_smoothing=0.1, rows=4, length=8, warmup=1,
            pairs=3, target=1.0)


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
  assert [peers.WORKLOADS[w]["target"] for w in peers.WORKLOADS] == [1.25, 1.15, 2.0, 2.0]


@pytest.mark.parametrize("kind, extra", [
    ("train", {}), ("decode", dict(new_tokens=5, beam_size=2, length_penalty=0.6))])
def test_our_side_serves_timed_calls_and_profiles_them(kind, extra, tmp_path):
  # As the driver runs it: a worker process, warm, timing one call per request, then tracing
  # a few more (XLA's CPU op events need the flag before its backend starts: `profile`).
  with peers.start("ours", dict(TINY, kind=kind, profile=True, **extra)) as ours:
    assert ours.info["version"].startswith("jax ") and "device" in ours.info["threads"]
    times = [ours.time_call() for _ in range(2)]
    table = ours.ask("profile", str(tmp_path)).splitlines()
  assert all(0 < t < 60 for t in times)
  assert table[0].split()[:3] == ["ms/call", "share", "runs/call"] and len(table) > 2
  assert "ms/call in" in table[-1]


class FakeWorker:
  def __init__(self, name, seconds, log):
    self.name, self.seconds, self.log = name, iter(seconds), log

  def time_call(self):
    self.log.append(self.name)
    return next(self.seconds)


def test_paired_calls_alternate_who_goes_first_and_give_the_ratio_pair_by_pair():
  log = []
  ours = FakeWorker("ours", [1.0, 2.0, 1.0, 4.0], log)
  peer = FakeWorker("peer", [1.5, 2.0, 3.0, 6.0], log)
  t_ours, t_peer = paired.paired_times(ours, peer, pairs=4, gap_s=0)
  assert log == ["ours", "peer", "peer", "ours", "ours", "peer", "peer", "ours"]
  assert (t_ours, t_peer) == ([1.0, 2.0, 1.0, 4.0], [1.5, 2.0, 3.0, 6.0])
  r = peers.summarize(t_ours, t_peer)
  assert r["pair_ratios"] == [1.5, 1.0, 3.0, 1.5]
  # The median of the pairs' ratios (1.5), not the ratio of the sides' medians (4 / 1.5).
  assert (r["ratio"], r["ratio_min"], r["ratio_max"]) == (1.5, 1.0, 3.0)


def test_a_worker_that_ends_early_is_named_with_its_last_error_line(tmp_path):
  script = tmp_path / "broken_worker.py"
  script.write_text("import sys\nprint('loading', file=sys.stderr)\nsys.exit('no model here')\n")
  with pytest.raises(SystemExit, match=r"^broken_worker.py ended \(exit 1\) before READY: "
                                       r"no model here$"):
    paired.Worker([sys.executable, str(script)])


def test_missing_peers_are_named_in_one_line(monkeypatch):
  monkeypatch.setattr(peers, "_find", lambda module: None)
  with pytest.raises(SystemExit, match=r"torch and transformers not installed; run "
                                       r"`pip install -e \"\.\[peers\]\"`"):
    peers.check_peers_installed()
