"""Translation: cached = uncached decoding, batching keeps order, bad input, the CLI end to end."""

import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from transformer import translator as translator_lib
from transformer import workdir as workdir_lib
from transformer.config import EOS_ID, PAD_ID, TransformerConfig
from transformer.data.tokenizer import save_tokenizer, train_tokenizer
from transformer.decoding_benchmark import decode_batch_uncached
from transformer.models import init_params
from transformer.translate import read_lines
from transformer.translator import Translator, decode_batch
from transformer.workdir import WorkdirError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = ["the cat sat on the mat", "a house by the river", "zwei hunde spielen im schnee",
             "ein mann fährt fahrrad", "one two three four five six seven"]
MAX_LEN = 16


@pytest.fixture(scope="module")
def tokenizer():
  return train_tokenizer(SENTENCES * 4, vocab_size=48)


@pytest.fixture(scope="module")
def model(tokenizer):
  config = TransformerConfig(vocab_size=tokenizer.vocab_size, d_model=32, d_ff=64, num_heads=2,
                             num_encoder_layers=1, num_decoder_layers=1, max_length=MAX_LEN,
                             dropout_rate=0.0, deterministic=True)
  return config, init_params(config, jax.random.PRNGKey(0))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_cached_decoding_equals_uncached(model, beam_size):
  config, params = model
  rng = np.random.default_rng(0)
  inputs = rng.integers(4, config.vocab_size, (4, 8)).astype(np.int32)
  inputs[:, -1] = EOS_ID
  inputs[2, 3:] = PAD_ID  # a shorter source
  inputs[2, 2] = EOS_ID
  max_lengths = np.array([12, 5, 9, 1], np.int32)
  # Shapes as the Translator of test_real_model_translates_every_line uses (a compile reused).
  kwargs = dict(config=config, beam_size=beam_size, length_penalty=0.6, max_decode_len=12)
  cached = jax.device_get(decode_batch(params, inputs, max_lengths, **kwargs))
  uncached = jax.device_get(decode_batch_uncached(params, inputs, max_lengths, **kwargs))
  np.testing.assert_array_equal(cached[0], uncached[0])
  np.testing.assert_allclose(cached[1], uncached[1], rtol=1e-4, atol=1e-5)
  # The per-sentence limit holds: EOS at or before max_lengths, PAD after.
  for b, limit in enumerate(max_lengths):
    assert (cached[0][b, 0, :limit] == EOS_ID).any()
    assert (cached[0][b, 0, limit:] == PAD_ID).all()


def _copy_decoder(calls):
  """A fake decode_batch that 'translates' a source into itself (to check the bookkeeping)."""

  def fake(params, inputs, max_lengths, *, config, beam_size, length_penalty, max_decode_len,
           eos_id=EOS_ID, mesh=None):
    del params, length_penalty, eos_id, mesh
    inputs, max_lengths = np.asarray(inputs), np.asarray(max_lengths)
    calls.append((inputs.shape, max_decode_len, beam_size, inputs.copy(), max_lengths.copy()))
    out = np.zeros((inputs.shape[0], beam_size, max_decode_len), np.int32)
    width = min(inputs.shape[1], max_decode_len)
    out[:, :, :width] = inputs[:, None, :width]
    scores = np.tile(-np.arange(beam_size, dtype=np.float32), (inputs.shape[0], 1))
    return out, scores

  return fake


def test_batching_keeps_order_and_bad_lines(tokenizer, model, monkeypatch, caplog):
  config, params = model
  calls = []
  monkeypatch.setattr(translator_lib, "decode_batch", _copy_decoder(calls))
  long_line = " ".join(SENTENCES)  # far over MAX_LEN tokens
  lines = (["", SENTENCES[0], "a", long_line, "   ", "Größe ☃ 日本", SENTENCES[2]]
           + [w for w in SENTENCES[4].split()] + [SENTENCES[1], ""])
  translator = Translator(config, params, tokenizer, beam_size=2, batch_size=3, max_extra=5)
  with caplog.at_level(logging.WARNING):
    out = translator.translate_detailed(lines)
  assert len(out) == len(lines)
  limit = MAX_LEN - 1
  for line, result in zip(lines, out):
    ids = tokenizer.encode(line) if line.strip() else []
    assert result.text == tokenizer.decode(ids[:limit])  # the copy of its own source: in order
    assert result.truncated == (len(ids) > limit)
    assert result.source_tokens == (min(len(ids), limit) + 1 if ids else 0)
    assert len(result.candidates) == (2 if ids else 0)
  assert out[0].text == "" and out[4].text == "" and out[-1].text == ""
  cut = [i + 1 for i, r in enumerate(out) if r.truncated]  # 1-based line numbers
  assert 4 in cut  # the over-long line
  assert f"line(s) {', '.join(map(str, cut))}." in caplog.text
  # A handful of programs: (bucket, rows) pairs, not one per batch.
  shapes = {(shape, length) for shape, length, *_ in calls}
  assert len(shapes) <= 4, shapes
  for shape, length, beam, inputs, max_lengths in calls:
    assert beam == 2 and shape[1] in translator.buckets
    assert length == min(shape[1] + 5, MAX_LEN)
    real = (inputs != PAD_ID).sum(1)
    filler = (inputs[:, 0] == EOS_ID) & (real == 1) & (max_lengths == 1)
    np.testing.assert_array_equal(max_lengths[~filler], real[~filler] + 5)  # input length + extra


def test_real_model_translates_every_line(tokenizer, model):
  config, params = model
  translator = Translator(config, params, tokenizer, beam_size=3, batch_size=4, max_extra=4)
  lines = ["the cat", "", "Größe ☃ 日本 \ufffd", "a house"]  # one batch of the 8-token bucket
  out = translator.translate_detailed(lines)
  assert len(out) == len(lines)
  assert out[1].text == "" and out[1].candidates == [] and out[1].source_tokens == 0
  for r in out[:1] + out[2:]:
    assert 1 <= len(r.candidates) <= 3 and not r.truncated
    assert r.scores == sorted(r.scores, reverse=True)
    assert r.text == r.candidates[0]
    assert len(r.tokens) < r.source_tokens + 4  # output limit: input length + max_extra
  assert translator.translate(lines) == [r.text for r in out]


def test_read_lines_replaces_invalid_utf8():
  data = "a\n\nüber\r\n".encode() + b"bad \xff\xfe byte\n" + "日本".encode() + b"\nlast"
  lines, invalid = read_lines(data)
  assert lines == ["a", "", "über", "bad \ufffd\ufffd byte", "日本", "last"]
  assert invalid == [4]
  assert read_lines(b"") == ([], [])
  assert read_lines(b"\n") == ([""], [])


def _workdir(tmp_path, tokenizer, config, params):
  """A workdir as the trainer leaves it: tokenizer.model and an Orbax checkpoint of step 7."""
  from transformer.training.checkpointing import Checkpointer
  from transformer.training.steps import TrainState
  save_tokenizer(tokenizer, str(tmp_path / "tokenizer.model"))
  tx = optax.adam(1e-3)
  state = TrainState(step=np.int32(7), params=params, opt_state=tx.init(params))
  checkpointer = Checkpointer(str(tmp_path), keep=3)
  checkpointer.save(7, state, None, config)
  checkpointer.close()
  return str(tmp_path)


@pytest.mark.slow
def test_cli_keeps_line_count_and_reports_bad_input(tmp_path, tokenizer, model):
  config, params = model
  workdir = _workdir(tmp_path / "run", tokenizer, config, params)
  source = tmp_path / "in.txt"
  long_line = " ".join(SENTENCES).encode()
  source.write_bytes(b"\n".join([SENTENCES[0].encode(), b"", long_line, "Größe ☃".encode(),
                                 b"bad \xff utf-8", b"", SENTENCES[1].encode()]))  # no final \n
  target = tmp_path / "out.txt"
  result = subprocess.run(
      [sys.executable, "-m", "transformer.translate", f"--workdir={workdir}",
       f"--input={source}", f"--output={target}", "--beam_size=1"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  out = target.read_text(encoding="utf-8").split("\n")
  assert out[-1] == "" and len(out) - 1 == 7
  assert out[1] == "" and out[5] == ""
  assert "not valid UTF-8" in result.stderr and "line(s) 5" in result.stderr
  assert "truncated: line(s) 3" in result.stderr
  assert "step 7" in result.stderr


def test_missing_tokenizer_or_checkpoint_names_what_to_do(tmp_path, tokenizer):
  with pytest.raises(WorkdirError, match=r"tokenizer\.model.*python train\.py"):
    workdir_lib.translator_from_workdir(str(tmp_path))
  save_tokenizer(tokenizer, str(tmp_path / "tokenizer.model"))
  with pytest.raises(WorkdirError, match=r"No checkpoint.*python train\.py"):
    workdir_lib.translator_from_workdir(str(tmp_path))
  with pytest.raises(WorkdirError, match=r"transformer\.average"):
    workdir_lib.translator_from_workdir(str(tmp_path), checkpoint="averaged")
  result = subprocess.run(
      [sys.executable, "-m", "transformer.translate", f"--workdir={tmp_path / 'empty'}"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False, input="")
  assert result.returncode == 2
  assert "tokenizer.model (or characters.json) is missing" in result.stderr
  assert "train.py" in result.stderr


def test_an_unreadable_newest_checkpoint_falls_back_to_the_newest_readable(
    tmp_path, tokenizer, model, caplog):
  """As training does on resume: step 9's parameters are cut short, so step 7 is used (and
  said); the files stay where they are."""
  from transformer.training.checkpointing import Checkpointer
  from transformer.training.steps import TrainState
  config, params = model
  workdir = _workdir(tmp_path, tokenizer, config, params)
  tx = optax.adam(1e-3)
  checkpointer = Checkpointer(workdir, keep=3)
  checkpointer.save(9, TrainState(step=np.int32(9), params=params, opt_state=tx.init(params)),
                    None, config)
  checkpointer.close()
  state_dir = tmp_path / "checkpoints" / "9" / "state"
  for path in state_dir.rglob("*"):
    if path.is_file() and path.stat().st_size > 100:
      path.write_bytes(path.read_bytes()[:40])  # truncated array data
  caplog.set_level(logging.WARNING, logger="absl")
  _, info = workdir_lib.translator_from_workdir(workdir)
  assert info.step == 7
  messages = " ".join(r.getMessage() for r in caplog.records)
  assert "step 9" in messages and "Using the checkpoint of step 7" in messages
  assert state_dir.exists()


@pytest.mark.parametrize("make_output,expected", [
    (lambda d: d / "missing" / "out.txt", "does not exist"),
    (lambda d: d, "is a directory"),
])
def test_an_unwritable_output_fails_before_any_model_loads(tmp_path, make_output, expected):
  """In the first second: the workdir here does not even exist, and the output is checked
  first."""
  result = subprocess.run(
      [sys.executable, "-m", "transformer.translate", f"--workdir={tmp_path / 'none'}",
       f"--output={make_output(tmp_path)}"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False, input="a\n")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("Error: --output=")
  assert expected in result.stderr and "tokenizer" not in result.stderr



def test_sentences_split_over_devices_translate_as_on_one(tmp_path):
  # Three CPU devices (a fresh process: the count is fixed when JAX starts), 7 sentences: the
  # batch of 8 rows is padded to 9, three per device; each device searches its share alone,
  # on the thread pool the decoding commands set up (one thread per core, fewer than devices
  # on a 2-core machine).
  code = """
import json, jax, numpy as np
from transformer import cpu_devices
cpu_devices.configure(3, lambda n: True, collectives=False)
from transformer.config import EOS_ID, TransformerConfig
from transformer.models import init_params
from transformer.translator import Translator
config = TransformerConfig(vocab_size=40, d_model=32, d_ff=64, num_heads=2,
                           num_encoder_layers=1, num_decoder_layers=1, max_length=16,
                           dropout_rate=0.0, deterministic=True)
params = init_params(config, jax.random.PRNGKey(0))
rng = np.random.default_rng(0)
sources = [list(rng.integers(4, 40, n)) + [EOS_ID] for n in (3, 9, 1, 14, 6, 6, 11)]
sources = [[int(t) for t in s] for s in sources]
out = {}
for name, devices in (("three", jax.devices()), ("one", jax.devices()[:1])):
  translator = Translator(config, params, None, max_extra=4, batch_size=8, devices=devices)
  out[name] = {"devices": 1 if translator.mesh is None else translator.mesh.size,
               "results": [translator.translate_ids(sources, beam_size=b) for b in (1, 3)]}
print("RESULT " + json.dumps(out))
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for name in ("XLA_FLAGS", "PJRT_NPROC", "NPROC"):
    env.pop(name, None)
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout.split("RESULT ", 1)[1])
  assert out["three"]["devices"] == 3 and out["one"]["devices"] == 1
  for three, one in zip(out["three"]["results"], out["one"]["results"]):
    assert len(three) == len(one) == 7
    for (hyps3, scores3), (hyps1, scores1) in zip(three, one):
      assert hyps3 == hyps1 and hyps1
      np.testing.assert_allclose(scores3, scores1, rtol=1e-5)
