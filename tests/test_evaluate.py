"""translate_split and evaluate_workdir: translate a split, score it, write
eval_<split>.json (eval_<split>.<checkpoint>.json for other than the latest); from memory or a
workdir."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import optax
import pytest

from transformer.data.pipeline import get_tokenizer
from transformer.data.tokenizer import save_tokenizer
from transformer.evaluate import evaluate_workdir
from transformer.models import init_params
from transformer.scores import score_translations
from transformer.tasks.translation import TranslationTask, resolve_split, translate_split
from transformer.training.checkpointing import Checkpointer
from transformer.training.steps import TrainState
from transformer.training.validation import default_config
from transformer.workdir import WorkdirError, results_name

KEYS = ("bleu", "chrf", "tokenized_bleu", "exact_match", "num_examples", "sacrebleu_signature")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny numbers-task run config, its tokenizer (trained by the data pipeline) and params."""
  workdir = str(tmp_path_factory.mktemp("run"))
  config = default_config()
  config.numbers.update(num_train=200, num_validation=12, num_test=12)
  config.vocab_size = 96
  config.tokenizer_sample_sentences = 400
  config.max_length = 24
  config.model.update(d_model=16, d_ff=32, num_heads=2, num_encoder_layers=1,
                      num_decoder_layers=1)
  config.eval_batch_size = 4
  config.num_samples_to_print = 2
  tokenizer = get_tokenizer(config, workdir)
  model_config = TranslationTask().model_config(config, tokenizer.vocab_size)
  params = init_params(model_config, jax.random.PRNGKey(0))
  return config, workdir, tokenizer, model_config, params


def test_evaluate_in_memory_writes_scores(run):
  config, workdir, tokenizer, model_config, params = run
  result = translate_split(config, workdir, "test", params=params, tokenizer=tokenizer,
                           model_config=model_config, max_examples=4, beam_size=1, step=3)
  for key in KEYS:
    assert key in result
  assert result["num_examples"] == 4 and result["step"] == 3 and result["beam_size"] == 1
  assert result["sacrebleu_signature"].startswith("BLEU: nrefs:1|")
  with open(os.path.join(workdir, "eval_test.json"), encoding="utf-8") as f:
    written = json.load(f)
  assert written == result
  # The scores are those of the written translations against the split's references.
  with open(os.path.join(workdir, "eval_test.txt"), encoding="utf-8") as f:
    hypotheses = f.read().split("\n")[:-1]
  from transformer.data import load_pairs
  references = [t for _, t in load_pairs(config, "test")[:4]]
  assert len(hypotheses) == 4
  expected = score_translations(hypotheses, references)
  assert result["bleu"] == pytest.approx(expected["bleu"])
  assert result["chrf"] == pytest.approx(expected["chrf"])
  # write=False leaves the files alone (the trainer's periodic validation).
  os.remove(os.path.join(workdir, "eval_test.json"))
  translate_split(config, workdir, "test", params=params, tokenizer=tokenizer,
                  model_config=model_config, max_examples=4, beam_size=1, write=False)
  assert not os.path.exists(os.path.join(workdir, "eval_test.json"))


def test_evaluate_from_workdir_checkpoint(run):
  config, workdir, _, model_config, params = run
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    json.dump({"config": config.to_dict(), "model": dataclasses.asdict(model_config)}, f)
  tx = optax.adam(1e-3)
  checkpointer = Checkpointer(workdir, keep=3)
  checkpointer.save(5, TrainState(step=jnp.int32(5), params=params, opt_state=tx.init(params)),
                    None, model_config)
  checkpointer.close()
  result = evaluate_workdir(workdir, "validation", max_examples=4, beam_size=1)
  assert result["split"] == resolve_split(config, "validation") == "validation"
  assert result["step"] == 5 and "step 5" in result["checkpoint"]
  assert result["num_examples"] == 4
  latest_path = os.path.join(workdir, "eval_validation.json")
  with open(latest_path, encoding="utf-8") as f:
    latest = f.read()
  # Another checkpoint's results go beside the latest's, not over them.
  by_step = evaluate_workdir(workdir, "validation", checkpoint=5, max_examples=2, beam_size=1)
  with open(os.path.join(workdir, "eval_validation.step5.json"), encoding="utf-8") as f:
    assert json.load(f) == by_step and by_step["num_examples"] == 2
  with open(os.path.join(workdir, "eval_validation.step5.txt"), encoding="utf-8") as f:
    assert len(f.read().splitlines()) == 2
  with open(latest_path, encoding="utf-8") as f:
    assert f.read() == latest


@pytest.mark.parametrize("checkpoint, name", [
    ("latest", "eval_test"), (3000, "eval_test.step3000"), ("3000", "eval_test.step3000"),
    ("averaged", "eval_test.averaged"), ("best", "eval_test.best"),
    ("runs/x/checkpoints/3000/", "eval_test.step3000"),
    ("/tmp/my average", "eval_test.my_average"),
])
def test_results_name_tells_checkpoints_apart(checkpoint, name):
  assert results_name("test", checkpoint) == name


def test_missing_pieces_name_what_to_do(tmp_path, run):
  config, workdir, tokenizer, _, _ = run
  with pytest.raises(WorkdirError, match=r"tokenizer\.model \(or characters\.json\) is "
                     r"missing.*python train\.py"):
    evaluate_workdir(str(tmp_path), "test", config=config)
  with pytest.raises(WorkdirError, match=r"config\.json is missing.*--config"):
    evaluate_workdir(str(tmp_path), "test")
  save_tokenizer(tokenizer, os.path.join(str(tmp_path), "tokenizer.model"))
  with pytest.raises(WorkdirError, match=r"No checkpoint.*python train\.py"):
    evaluate_workdir(str(tmp_path), "test", config=config)
  (tmp_path / "config.json").write_text('{"config": {"vocab_si')  # a write cut short by a kill
  with pytest.raises(WorkdirError, match=r"config\.json is not valid JSON \(.*\)\. Delete it and "
                     r"pass --config"):
    evaluate_workdir(str(tmp_path), "test")
