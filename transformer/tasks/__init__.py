"""Tasks: what differs between kinds of training (see base.py). `config.task` names one."""

from __future__ import annotations

from transformer.config import ConfigError
from transformer.tasks.base import Task, TrainingData  # noqa: F401 (the interface, re-exported)
from transformer.tasks.language_model import LanguageModelTask
from transformer.tasks.translation import TranslationTask

TASKS = {"translation": TranslationTask(), "language_model": LanguageModelTask()}


def get_task(config) -> Task:
  """The task `config.task` names ("translation" when the config has no `task` key, as the
  configs of workdirs made before tasks existed)."""
  name = config.get("task", "translation")
  if name not in TASKS:
    raise ConfigError(f"task={name!r} is unknown; allowed: {', '.join(TASKS)}.")
  return TASKS[name]
