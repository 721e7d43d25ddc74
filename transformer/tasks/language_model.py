"""Language modelling (GPT, as nanoGPT): one text, a decoder-only model, loss and samples.

Batches are `{"inputs": window[:-1], "targets": window[1:]}` over contiguous windows of the text
(transformer/data/lm_data.py); the model (transformer/decoder_only.py) predicts every next token.
Validation reports the loss in nats per token over all of the validation text (the last 10% of
the file, as nanoGPT splits it) and its perplexity, and prints samples; the final evaluation
writes WORKDIR/eval_validation.json with the last validation loss and samples.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from transformer.config import ConfigError, TransformerConfig
from transformer.data import lm_data
from transformer.loss import loss_and_metrics, summarize
from transformer.models import on_one_device
from transformer.sampling import sample
from transformer.tasks.base import TaskBase, TrainingData, require_int


def generate(model_config: TransformerConfig, params, tokenizer, prompt: str, *,
             max_new_tokens: int, temperature: float, top_k: int, num_samples: int,
             seed: int) -> list[str]:
  """`num_samples` continuations of `prompt` (text), each `max_new_tokens` tokens long; an empty
  prompt starts from a newline, as nanoGPT's sample.py."""
  ids = lm_data.encode_text(tokenizer, prompt or "\n")
  if ids.size == 0:
    raise ValueError(f"The prompt {prompt!r} encodes to no tokens.")
  prompts = np.repeat(ids[None].astype(np.int32), num_samples, axis=0)
  lengths = np.full((num_samples,), ids.size, np.int32)
  tokens = sample(model_config.replace(decode=False, deterministic=True), on_one_device(params),
                  prompts, lengths, jax.random.PRNGKey(seed), max_new_tokens=max_new_tokens,
                  temperature=float(temperature), top_k=int(top_k))
  tokens = np.asarray(jax.device_get(tokens))
  return [lm_data.decode_lm(tokenizer, row) for row in tokens]


class LanguageModelTask(TaskBase):
  """The trainer's `Task` for language modelling (see tasks/base.py for the interface)."""

  name = "language_model"
  architecture = "decoder_only"
  reference_config = "shakespeare_char"
  summed_metrics = ()

  def validate(self, config, *, num_devices: int, process_count: int) -> None:
    if config.dataset not in lm_data.LM_DATASETS:
      raise ConfigError(f"dataset={config.dataset!r} is unknown for task='language_model'; "
                        f"allowed: {', '.join(lm_data.LM_DATASETS)}.")
    if config.tokenizer not in lm_data.LM_TOKENIZERS:
      raise ConfigError(f"tokenizer={config.tokenizer!r} is unknown; allowed: "
                        f"{', '.join(lm_data.LM_TOKENIZERS)}.")
    if config.tokenizer == "sentencepiece":
      require_int(config, "vocab_size")
    if not 0.0 < config.validation_fraction < 1.0:
      raise ConfigError(f"validation_fraction={config.validation_fraction!r} must be in (0, 1) "
                        "(nanoGPT validates on the last 0.1 of the text).")
    for key in ("prefetch", "sample_length", "sample_top_k", "num_samples_to_print"):
      require_int(config, key, minimum=0)
    if not config.sample_temperature >= 0:
      raise ConfigError(f"sample_temperature={config.sample_temperature!r} must be >= 0 "
                        "(0 = greedy).")

  def data(self, config, workdir: str) -> TrainingData:
    tokenizer = lm_data.get_lm_tokenizer(config, workdir, process_index=jax.process_index())
    # The text is read, split and encoded once, for training and validation alike.
    hosts = dict(process_index=jax.process_index(), process_count=jax.process_count(),
                 row_multiple=jax.local_device_count(),
                 split_ids=lm_data.lm_split_ids(config, tokenizer))
    train_iter = lm_data.make_lm_train_iterator(config, tokenizer, **hosts)
    eval_batches = []
    if config.eval_every_steps:
      eval_batches = lm_data.make_lm_eval_batches(config, tokenizer,
                                                  num_batches=config.num_eval_batches, **hosts)
    return TrainingData(vocab_size=tokenizer.vocab_size, train_iter=train_iter,
                        eval_batches=eval_batches, tokenizer=tokenizer)

  def samples(self, config, params, model_config, tokenizer, step: int) -> list[str]:
    """`num_samples_to_print` samples of `sample_length` tokens after `sample_prompt`, printed."""
    if not config.num_samples_to_print or not config.sample_length:
      return []
    texts = generate(model_config, params, tokenizer, config.sample_prompt,
                     max_new_tokens=config.sample_length, temperature=config.sample_temperature,
                     top_k=config.sample_top_k, num_samples=config.num_samples_to_print,
                     seed=config.seed + step)
    if jax.process_index() == 0:
      print(f"\nSamples at step {step} (temperature {config.sample_temperature}, top-k "
            f"{config.sample_top_k}):", flush=True)
      for text in texts:
        print(text + "\n" + "-" * 40, flush=True)
    return texts

  def on_validation(self, config, workdir, params, model_config, tokenizer, step) -> dict:
    if step < config.num_train_steps:  # the last step's samples are the final evaluation's
      self.samples(config, params, model_config, tokenizer, step)
    return {}

  def final_evaluation(self, config, workdir, params, model_config, tokenizer, step,
                       validation=None):
    """The last validation's loss and perplexity, and samples -> WORKDIR/eval_validation.json."""
    if validation is None:
      return None
    result = {"split": "validation", "step": step, **validation,
              "samples": self.samples(config, params, model_config, tokenizer, step)}
    if jax.process_index() == 0:
      with open(os.path.join(workdir, "eval_validation.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
      print(f"Validation loss {validation['nll']:.4f} nats per token, perplexity "
            f"{validation['perplexity']:.3f}  -> {os.path.join(workdir, 'eval_validation.json')}",
            flush=True)
    return result

  def evaluate(self, config, workdir, split, *, params, model_config, tokenizer, step=None,
               checkpoint_text="", write: bool = True, results_name: str = "",
               **options) -> dict:
    """Loss and perplexity over every token of the validation text (on one device); written to
    WORKDIR/<results_name>.json (default eval_<split>) unless `write` is False."""
    if split != "validation":
      raise ValueError(f"--split={split!r}: a language model is evaluated on --split=validation "
                       f"(the last {config.validation_fraction} of the text).")
    batches = lm_data.make_lm_eval_batches(config, tokenizer)
    forward = self.forward(model_config.replace(deterministic=True))
    params = on_one_device(params)

    @jax.jit
    def sums(batch):
      return loss_and_metrics(forward(params, batch), batch["targets"], 0.0)[1]

    total = None
    for batch in batches:
      metrics = sums(batch)
      total = metrics if total is None else jax.tree.map(jnp.add, total, metrics)
    scores = {"split": split, "checkpoint": checkpoint_text, "step": step,
              **summarize(jax.device_get(total)), "tokens": int(total["tokens"])}
    logging.info("%s (%s): loss %.4f nats per token, perplexity %.3f", split, checkpoint_text,
                 scores["nll"], scores["perplexity"])
    if write and jax.process_index() == 0:
      path = os.path.join(workdir, (results_name or f"eval_{split}") + ".json")
      with open(path, "w", encoding="utf-8") as f:
        json.dump(scores, f, indent=2)
        f.write("\n")
    return scores
