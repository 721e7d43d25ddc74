"""Bad run configs are rejected before anything compiles, with a message naming the key."""


import pytest

from transformer.config_files import load_config_file
from transformer.training.validation import ConfigError, default_config, validate_config


def config_with(**changes):
  config = default_config()
  for key, value in changes.items():
    target = config
    *parents, last = key.split(".")
    for p in parents:
      target = target[p]
    target[last] = value
  return config


def test_default_config_is_valid():
  validate_config(default_config(), num_devices=1)
  validate_config(default_config(), num_devices=8)


@pytest.mark.parametrize("changes, devices, message", [
    (dict(batch_size=60), 8, r"batch_size=60 cannot be split over 8 devices"),
    (dict(num_train_steps=0), 1, r"num_train_steps=0 must be an integer >= 1"),
    (dict(grad_accum_steps=0), 1, r"grad_accum_steps=0"),
    (dict(label_smoothing=1.0), 1, r"label_smoothing=1.0 must be in \[0, 1\)"),
    (dict(schedule="rsqrt"), 1, r"schedule='rsqrt' is unknown; allowed: paper, cosine, constant"),
    (dict(parallelism="tensor"), 1, r"parallelism='tensor' is unknown; allowed: data, fsdp"),
    (dict(schedule="paper", warmup_steps=0), 1,
     r"warmup_steps=0 must be >= 1 with schedule='paper'"),
    (dict(learning_rate=0.0), 1, r"learning_rate=0.0 must be > 0"),
    (dict(adam_b2=1.0), 1, r"adam_b2=1.0 must be in \[0, 1\)"),
    (dict(batching="tokens", tokens_per_batch=10), 1,
     r"tokens_per_batch=10 is smaller than max_length=64"),
    (dict(**{"model.d_model": 130}), 1,
     r"d_model=130 is not divisible by num_heads=4.*config.model"),
    (dict(**{"model.norm_order": "sandwich"}), 1, r"norm_order='sandwich' is unknown"),
    (dict(max_length=1), 1, r"max_length=1 must be at least 2"),
    (dict(train_minutes=-5.0), 1, r"train_minutes=-5.0 must be a number >= 0 \(0 = off"),
    (dict(budget_overplan=0.5), 1, r"budget_overplan=0.5 must be a fraction in \[0, 0.25\]"),
    (dict(train_minutes=60.0, schedule="cosine", warmup_steps=5), 1,
     r"warmup_steps=5 is too short for train_minutes=60.0 with schedule='cosine'.*"
     r"warmup_steps >= 11"),
])
def test_bad_values_name_the_key(changes, devices, message):
  with pytest.raises(ConfigError, match=message):
    validate_config(config_with(**changes), num_devices=devices)


def test_unknown_keys_are_named():
  config = default_config()
  config.num_train_step = 5
  with pytest.raises(ConfigError, match=r"Unknown config key\(s\): num_train_step"):
    validate_config(config, num_devices=1)
  config = default_config()
  config.model.d_modle = 64
  with pytest.raises(ConfigError, match=r"Unknown key\(s\) model.d_modle"):
    validate_config(config, num_devices=1)


def test_batch_not_split_over_hosts():
  with pytest.raises(ConfigError, match=r"batch_size=64 cannot be split over 3 hosts"):
    validate_config(config_with(batch_size=64), num_devices=1, process_count=3)


def test_recipes_are_valid():
  for name in ("default", "multi30k", "wmt14_ende_base", "wmt14_ende_big", "shakespeare_char"):
    validate_config(load_config_file(name), num_devices=4)
  for size in ("large", "gpt"):
    validate_config(load_config_file("shakespeare_char", size), num_devices=4)


def test_a_language_model_config_is_checked_against_its_own_keys():
  config = load_config_file("shakespeare_char")
  config.beam_size = 4  # a translation key
  with pytest.raises(ConfigError, match=r"Unknown config key\(s\): beam_size\. Known keys of "
                     r"task='language_model' are those of configs/shakespeare_char\.py"):
    validate_config(config, num_devices=1)
  config = load_config_file("shakespeare_char")
  config.sample_temperature = -1.0
  with pytest.raises(ConfigError, match=r"sample_temperature=-1\.0 must be >= 0"):
    validate_config(config, num_devices=1)
  config = load_config_file("shakespeare_char")
  config.task = "classification"
  with pytest.raises(ConfigError, match=r"task='classification' is unknown; allowed: "
                     r"translation, language_model"):
    validate_config(config, num_devices=1)
