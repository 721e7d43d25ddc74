"""`python train.py`: flags -> train_and_evaluate, with the real data pipeline."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(*args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout, env=env)


BAD_CONFIGS = [
    ("--config.foo=1", "the config has no key 'foo'; known keys: adam_b1"),
    ("--config.model.foo=1", "the config has no key 'model.foo'; known keys under model:"),
    ("--config.num_train_steps=abc", "--config.num_train_steps=abc: invalid literal for int()"),
    ("--config.schedule=linear", "schedule='linear' is unknown; allowed: paper, cosine, constant"),
    ("--config.model.remat_policy=most",
     "remat_policy='most' is unknown; allowed: none, dots, full"),
    ("--config.model.attention_impl=flash", "attention_impl='flash' is unknown; allowed: auto,"),
    ("--config.model.d_model=510", "d_model=510 is not divisible by num_heads=4"),
    ("--config.model.dropout_rate=1.5", "dropout_rate=1.5 must be in [0, 1)"),
    ("--config.token_budget=slots", "token_budget='slots' is unknown; allowed: real, padded"),
    ("--config.checkpoint_every_minutes=-1", "checkpoint_every_minutes=-1.0 must be a number >= 0"),
    ("--config.beam_size=0", "beam_size=0 must be an integer >= 1"),
    ("--config.max_decode_extra=-5", "max_decode_extra=-5 must be an integer >= 0"),
    ("--config.length_penalty=-1", "length_penalty=-1.0 must be >= 0"),
    ("--config.prefetch=-1", "prefetch=-1 must be an integer >= 0"),
    ("--config.pack_window=0", "pack_window=0 must be an integer >= 1"),
    ("--config.num_train_steps=0", "num_train_steps=0 must be an integer >= 1"),
    ("--config.batching=random", "batching='random' is unknown; allowed: padded, tokens, packed"),
    ("--config.learning_rate=-1", "learning_rate=-1.0 must be > 0"),
    ("--config.label_smoothing=1.0", "label_smoothing=1.0 must be in [0, 1)"),
    ("--config.grad_clip_norm=-1", "grad_clip_norm=-1.0 must be >= 0"),
    ("--config.adam_b2=1.0", "adam_b2=1.0 must be in [0, 1)"),
    ("--config.parallelism=model", "parallelism='model' is unknown; allowed: data, fsdp"),
    ("--config.max_length=1", "max_length=1 must be at least 2"),
    ("--config.cpu_devices=0", "cpu_devices=0 must be 'auto' or a number of devices >= 1"),
    ("--config.dataset=text --config.data_dir=/nonexistent", "/nonexistent"),
]


@pytest.mark.parametrize("flag,message", BAD_CONFIGS)
def test_a_bad_value_is_one_error_line_naming_the_key(tmp_path, flag, message):
  """Exit 2 and one `Error:` line, no traceback, before anything is built or compiled."""
  result = _train(f"--workdir={tmp_path}", *flag.split())
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("Error: ") and message in last, last
  assert "Traceback" not in result.stderr
  # Nothing was built: no tokenizer trained, no model compiled, no checkpoint.
  assert "Trained a" not in result.stderr and "FLOPs per step" not in result.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))
  assert not os.path.exists(os.path.join(tmp_path, "tokenizer.model"))


@pytest.mark.slow
def test_a_short_run_on_the_number_task_then_a_resume(tmp_path):
  small = ["--config.numbers.num_train=3000", "--config.tokenizer_sample_sentences=2000",
           "--config.batch_size=16", "--config.eval_every_steps=4",
           "--config.num_eval_batches=1", "--config.eval_batch_size=32",
           "--config.checkpoint_every_steps=4", "--config.log_every_steps=2",
           "--config.model.num_encoder_layers=1", "--config.model.num_decoder_layers=1",
           "--config.beam_size=1", "--config.num_samples_to_print=1"]
  result = _train(f"--workdir={tmp_path}", "--config.num_train_steps=4", *small)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Workdir: {tmp_path}" in result.stdout
  assert "Parameters:" in result.stderr and "FLOPs per step" in result.stderr
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if r["split"] == "train"] == [2, 4]
  assert [r["step"] for r in records if r["split"] == "eval"] == [4]
  assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "4"))

  assert os.path.isfile(os.path.join(tmp_path, "eval_test.json"))

  result = _train(f"--workdir={tmp_path}", "--config.num_train_steps=6", "--config.test_split=",
                  *small)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Resumed from the checkpoint of step 4" in result.stderr
  assert "config.test_split is empty: no final test evaluation" in result.stderr
  assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "6"))


def test_a_missing_test_split_fails_before_training(tmp_path):
  """The test split is read after training; its absence is reported before any work."""
  data = tmp_path / "data"
  data.mkdir()
  for split in ("train", "validation"):
    (data / f"{split}.en").write_text("one\ntwo\nthree\n")
    (data / f"{split}.de").write_text("eins\nzwei\ndrei\n")
  result = _train(f"--workdir={tmp_path / 'run'}", "--config.dataset=text",
                  f"--config.data_dir={data}", "--config.source_lang=en",
                  "--config.target_lang=de")
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("Error: Missing file") and "test" in last, last
  assert "Trained a" not in result.stderr
