"""The decoder-only language model: causality, cached sampling, top-k, seeds, and a whole run
through the same trainer, evaluate command and sample command as translation."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer import models
from transformer.config import TransformerConfig
from transformer.decoder_only import DecoderOnlyTransformer
from transformer.sampling import next_token, sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = TransformerConfig(architecture="decoder_only", vocab_size=23, d_model=32, d_ff=64,
                        num_heads=4, num_encoder_layers=0, num_decoder_layers=2,
                        dropout_rate=0.0, max_length=12, norm_order="pre",
                        positional_encoding="learned", activation="gelu",
                        scale_embeddings=False)


@pytest.fixture(scope="module")
def params():
  # A random model has nearly uniform predictions; larger weights make argmax chains and
  # top-k sets clear-cut so that float noise cannot flip them.
  fresh = models.init_params(CFG, jax.random.key(0))
  return jax.tree.map(lambda x: x * 3.0 if x.ndim == 2 else x, fresh)


@jax.jit
def _full_logits(params, tokens):
  return DecoderOnlyTransformer(CFG.replace(deterministic=True)).apply({"params": params}, tokens)


def full_logits(params, tokens):
  return _full_logits(params, jnp.asarray(tokens, jnp.int32))


def test_no_cross_attention_and_no_encoder(params):
  assert set(params) == {"embedding", "positional_encoding", "layer_0", "layer_1", "final_norm"}
  assert "cross_attention" not in params["layer_0"]
  with pytest.raises(ValueError, match="num_encoder_layers=2 with architecture='decoder_only'"):
    CFG.replace(num_encoder_layers=2)


def test_a_position_sees_only_the_past(params):
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, CFG.vocab_size, size=(2, 10))
  changed = tokens.copy()
  changed[:, 6:] = rng.integers(4, CFG.vocab_size, size=(2, 4))
  a, b = full_logits(params, tokens), full_logits(params, changed)
  np.testing.assert_allclose(a[:, :6], b[:, :6], atol=1e-5)
  assert float(jnp.abs(a[:, 6:] - b[:, 6:]).max()) > 1e-3


def argmax_chain(params, prompt, new_tokens):
  """Greedy continuation by full forward passes over the last max_length tokens (no cache)."""
  tokens = list(prompt)
  for _ in range(new_tokens):
    window = tokens[-CFG.max_length:]
    tokens.append(int(jnp.argmax(full_logits(params, [window])[0, -1])))
  return tokens


@pytest.mark.parametrize("new_tokens", [6, 20])  # within the context, and past it (windows)
def test_cached_greedy_sampling_is_the_full_forward_argmax_chain(params, new_tokens):
  prompt = [5, 9, 7]
  out = sample(CFG, params, jnp.asarray([prompt]), jnp.asarray([3]), jax.random.key(0),
               max_new_tokens=new_tokens, temperature=0.0)
  assert out.shape == (1, 3 + new_tokens)
  assert out[0].tolist() == argmax_chain(params, prompt, new_tokens)


def test_rows_with_prompts_of_different_lengths(params):
  prompts = jnp.asarray([[5, 9, 7, 11], [6, 8, 0, 0]])
  out = sample(CFG, params, prompts, jnp.asarray([4, 2]), jax.random.key(0), max_new_tokens=5,
               temperature=0.0)
  assert out[0].tolist() == argmax_chain(params, [5, 9, 7, 11], 5)
  assert out[1, :7].tolist() == argmax_chain(params, [6, 8], 5)


def test_top_k_never_leaves_the_k_most_likely(params):
  k, prompt = 3, [5, 9]
  out = sample(CFG, params, jnp.asarray([prompt] * 16), jnp.asarray([2] * 16), jax.random.key(1),
               max_new_tokens=CFG.max_length - 1, temperature=5.0, top_k=k)  # hot: anything
  out = np.asarray(out)                                                  # but for top-k
  logits = np.asarray(full_logits(params, out[:, :-1]))  # [rows, t] predicts token t + 1
  top = np.argsort(-logits, axis=-1)[..., :k]
  for t in range(1, out.shape[1] - 1):
    assert np.all(np.any(top[:, t] == out[:, t + 1, None], axis=-1)), t
  assert len(np.unique(out[:, 2:])) > k  # many tokens drawn overall: the test could fail


def test_next_token_over_a_word_vocabulary():
  """A vocabulary of words, not characters: the top-k threshold over many chunks of logits (the
  tiny model's 23 fall back to `lax.top_k`), and the argmax with ties."""
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((64, 5000)).astype(np.float32)
  logits[:8] = np.round(logits[:8])  # many ties: the first maximum wins, as in jnp.argmax
  greedy = jax.jit(lambda x: next_token(x, jax.random.key(0), temperature=0.0, top_k=0))
  np.testing.assert_array_equal(greedy(logits), np.argmax(logits, axis=-1))
  k = 7
  draw = jax.jit(lambda x, key: next_token(x, key, temperature=3.0, top_k=k))
  drawn = np.stack([draw(logits, jax.random.key(seed)) for seed in range(20)], axis=1)
  allowed = np.argsort(-logits[8:], axis=-1, kind="stable")[:, :k]  # rows without ties
  assert np.all(np.any(drawn[8:, :, None] == allowed[:, None, :], axis=-1))
  assert min(len(set(row)) for row in drawn[8:].tolist()) > 1  # hot: more than the argmax


def test_the_same_seed_gives_the_same_text(params):
  args = (CFG, params, jnp.asarray([[5, 9]] * 2), jnp.asarray([2, 2]))
  a = sample(*args, jax.random.key(7), max_new_tokens=15, temperature=1.0)
  b = sample(*args, jax.random.key(7), max_new_tokens=15, temperature=1.0)
  c = sample(*args, jax.random.key(8), max_new_tokens=15, temperature=1.0)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def small_lm_config(text_file, workdir_steps=40):
  from transformer.config_files import load_config_file
  config = load_config_file("shakespeare_char")
  config.text_file = str(text_file)
  config.max_length = 16
  config.batch_size = 8
  config.eval_batch_size = 16
  config.model.update(d_model=32, d_ff=64, num_heads=2, num_decoder_layers=1)
  config.num_train_steps = workdir_steps
  config.warmup_steps = 5
  config.log_every_steps = 10
  config.eval_every_steps = 20
  config.checkpoint_every_steps = 20
  config.sample_length = 20
  config.num_samples_to_print = 1
  return config


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("text") / "input.txt"
  lines = [f"{name}:\nThe {thing} is {adj}.\n" for name in ("ROMEO", "JULIET", "NURSE")
           for thing in ("moon", "night", "sun", "rose") for adj in ("bright", "sweet", "dark")]
  path.write_text("".join(lines * 6))
  return path


def test_training_evaluating_and_sampling_a_language_model(tmp_path, text_file, capsys):
  from transformer.evaluate import evaluate_workdir
  from transformer.training import trainer
  from transformer.training.writers import read_metrics
  workdir = str(tmp_path / "run")
  config = small_lm_config(text_file)
  state = trainer.train_and_evaluate(config, workdir)
  assert int(state.step) == 40
  train, evals = read_metrics(workdir, "train"), read_metrics(workdir, "eval")
  assert train[-1]["loss"] < train[0]["loss"] - 0.5
  assert [r["step"] for r in evals] == [20, 40]
  for record in evals:
    assert record["perplexity"] == pytest.approx(np.exp(record["nll"]), rel=1e-6)
  assert "source_tokens_per_update" not in train[-1] and train[-1]["tokens_per_sec"] > 0
  result = json.load(open(os.path.join(workdir, "eval_validation.json")))
  assert result["nll"] == pytest.approx(evals[-1]["nll"]) and len(result["samples"]) == 1
  printed = capsys.readouterr().out
  assert "Samples at step 20" in printed and "Validation loss" in printed
  assert os.path.exists(os.path.join(workdir, "characters.json"))

  # The evaluate command's function scores every validation token with the saved checkpoint.
  scores = evaluate_workdir(workdir, "validation")
  assert scores["step"] == 40 and scores["nll"] == pytest.approx(evals[-1]["nll"], rel=1e-4)
  text = text_file.read_text()
  assert scores["tokens"] == len(text) - int(len(text) * 0.9) - 1

  # Resuming for more steps continues from the checkpoint of step 40.
  config.num_train_steps = 60
  state = trainer.train_and_evaluate(config, workdir)
  assert int(state.step) == 60 and read_metrics(workdir, "train")[-1]["step"] == 60


@pytest.mark.slow
def test_sample_command(tmp_path, text_file):
  from transformer.training import trainer
  workdir = str(tmp_path / "run")
  config = small_lm_config(text_file, workdir_steps=20)
  config.eval_every_steps = 0
  trainer.train_and_evaluate(config, workdir)
  command = [sys.executable, "-m", "transformer.sample", f"--workdir={workdir}",
             "--prompt=ROMEO:", "--max_new_tokens=30", "--num_samples=2", "--seed=3"]
  runs = [subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
          for _ in range(2)]
  assert runs[0].returncode == 0, runs[0].stderr
  samples = runs[0].stdout.split("---------------\n")
  assert len(samples) == 3 and samples[0].startswith("ROMEO:") and samples[1].startswith("ROMEO:")
  assert runs[0].stdout == runs[1].stdout  # the same seed, the same text
  bad = subprocess.run(command + ["--temperature=-1"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
  assert bad.returncode == 2 and bad.stderr.strip().startswith("Error: --temperature=-1.0")
