"""What every task shares: the data the trainer reads, and the model config a run config names.

A task (translation.py, language_model.py) supplies what differs between kinds of training:
its data, its model, the logits of a batch, what evaluation means and which samples to show.
The trainer (transformer/training/trainer.py) runs any task through the `Task` interface and
knows nothing of translation or language modelling.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Protocol

from transformer import models
from transformer.config import ConfigError, TransformerConfig

# TransformerConfig fields a run config does not set under `model`: the vocabulary comes from
# the tokenizer, max_length from the run config's `max_length`, the architecture from the task,
# and the two modes from the trainer and decoder.
MODEL_FIELDS_NOT_IN_CONFIG = ("vocab_size", "max_length", "architecture", "deterministic",
                              "decode")

# forward(params, batch, rngs) -> float32 logits [rows, length, vocab] predicting batch["targets"]
Forward = Callable[..., Any]


@dataclasses.dataclass
class TrainingData:
  """What the training loop reads.

  vocab_size: the tokenizer's vocabulary (sets the model's).
  train_iter: endless iterator of this host's batches (numpy dicts, see docs/architecture.md);
    a grain DatasetIterator is checkpointed with the model, so resume reads the next batch.
  eval_batches: this host's validation batches, the same every evaluation.
  tokenizer: the tokenizer, or None for synthetic data (then no samples and no final evaluation).
  """
  vocab_size: int
  train_iter: Iterator[dict]
  eval_batches: list[dict]
  tokenizer: Any = None

  @property
  def checkpointable(self) -> bool:
    return hasattr(self.train_iter, "get_state") and hasattr(self.train_iter, "set_state")


def model_config_from(config, vocab_size: int, architecture: str) -> TransformerConfig:
  """TransformerConfig(architecture, vocab_size=tokenizer's, max_length=config.max_length,
  **config.model)."""
  fields = ({f.name for f in dataclasses.fields(TransformerConfig)}
            - set(MODEL_FIELDS_NOT_IN_CONFIG))
  model = dict(config.model)
  unknown = sorted(set(model) - fields)
  if unknown:
    raise ConfigError(
        f"Unknown key(s) {', '.join('model.' + k for k in unknown)}; allowed under model: "
        f"{', '.join(sorted(fields))}.")
  try:
    return TransformerConfig(architecture=architecture, vocab_size=vocab_size,
                             max_length=config.max_length, **model)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"Invalid model config: {e} (set as config.model.*)") from e


class Task(Protocol):
  """The interface the trainer and the evaluate command use (see translation.py for one).

  name: the value of `config.task`.
  architecture: the TransformerConfig.architecture it trains.
  reference_config: the file in configs/ whose keys every config of this task has.
  summed_metrics: keys of `batch_metrics` (summable over batches, like the loss sums).
  """
  name: str
  architecture: str
  reference_config: str
  summed_metrics: tuple[str, ...]

  def validate(self, config, *, num_devices: int, process_count: int) -> None:
    """Raises ConfigError for the task's own keys (before any data is read)."""

  def rows_are_fixed(self, config) -> bool:
    """Whether `batch_size` sets the rows of every batch (checked against the devices)."""

  def data(self, config, workdir: str) -> TrainingData:
    """The tokenizer (trained and saved in `workdir` if new), training iterator and
    validation batches."""

  def model_config(self, config, vocab_size: int) -> TransformerConfig:
    """The model the run config describes."""

  def forward(self, model_config: TransformerConfig) -> Forward:
    """forward(params, batch, rngs=None) -> logits for batch["targets"]."""

  def batch_metrics(self, batch: dict) -> dict:
    """Extra summable metrics of a batch (jax arrays; called inside the jitted step)."""

  def on_validation(self, config, workdir: str, params, model_config, tokenizer,
                    step: int) -> dict:
    """Extra validation metrics and printed samples at each evaluation (may be {})."""

  def final_evaluation(self, config, workdir: str, params, model_config, tokenizer,
                       step: int, validation: dict | None = None) -> dict | None:
    """After the last step: the run's result, written to the workdir (None if nothing to do);
    `validation` is the last validation's metrics, when there was one."""

  def evaluate(self, config, workdir: str, split: str, *, params, model_config, tokenizer,
               step: int | None = None, checkpoint_text: str = "", **options) -> dict:
    """Scores of `split` (the evaluate command's work), written to WORKDIR/eval_<split>.json
    (or the option `results_name`'s .json) unless the option `write` is False."""


def require_int(config, key: str, minimum: int = 1) -> None:
  """Raises ConfigError unless config[key] is an integer >= minimum."""
  value = config[key]
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise ConfigError(f"{key}={value!r} must be an integer >= {minimum}.")


class TaskBase:
  """What tasks share: the model from `config.model` and the task's architecture, its
  `models.batch_forward`, no extra metrics, rows set by `batch_size`."""

  architecture: str
  summed_metrics: tuple[str, ...] = ()

  def rows_are_fixed(self, config) -> bool:
    """Whether `batch_size` sets the rows of every batch (else a token budget does)."""
    return True

  def model_config(self, config, vocab_size: int) -> TransformerConfig:
    return model_config_from(config, vocab_size, self.architecture)

  def forward(self, model_config: TransformerConfig) -> Forward:
    return models.batch_forward(model_config)

  def batch_metrics(self, batch: dict) -> dict:
    return {}
