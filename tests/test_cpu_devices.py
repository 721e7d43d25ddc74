"""config.cpu_devices: one JAX device per CPU core, chosen before JAX starts."""

import os
import subprocess
import sys
import textwrap

import pytest

from transformer import cpu_devices
from transformer.config import ConfigError
from transformer.config_files import load_config_file
from transformer.training.validation import trains_on, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("setting,expected", [("auto", "auto"), (3, 3), ("2", 2), (" 4 ", 4)])
def test_parse_accepts_auto_and_positive_counts(setting, expected):
  assert cpu_devices.parse(setting) == expected


@pytest.mark.parametrize("setting", [0, -2, "0", "many", 1.5, True, None])
def test_parse_rejects_anything_else_naming_the_key(setting):
  with pytest.raises(ConfigError, match=r"cpu_devices=.* must be 'auto' or a number"):
    cpu_devices.parse(setting)


def test_auto_is_the_most_devices_the_batch_splits_across_up_to_the_cores_and_the_cap():
  twelve_rows = lambda n: 12 % n == 0
  assert cpu_devices.choose("auto", twelve_rows, cores=2) == 2
  assert cpu_devices.choose("auto", twelve_rows, cores=5) == 4
  assert cpu_devices.choose("auto", twelve_rows, cores=64) == 6  # at most AUTO_MAX_DEVICES=8
  assert cpu_devices.choose("auto", lambda n: 7 % n == 0, cores=4) == 1
  assert cpu_devices.choose("auto", twelve_rows, cores=1) == 1
  assert cpu_devices.choose(5, twelve_rows, cores=2) == 5  # a number is the user's to choose


def test_trains_on_asks_the_config_validation():
  config = load_config_file("shakespeare_char")  # batch_size 12
  config.vocab_size = 69
  assert trains_on(config, 3) and trains_on(config, 4)
  assert not trains_on(config, 5)
  with pytest.raises(ConfigError, match="batch_size=12 cannot be split over 5 devices"):
    validate_config(config, num_devices=5)
  config.cpu_devices = "none"
  with pytest.raises(ConfigError, match="cpu_devices='none'"):
    validate_config(config, num_devices=1)


def _python(code: str, **env_changes) -> str:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  for name in ("XLA_FLAGS", "PJRT_NPROC", "NPROC"):
    env.pop(name, None)
  env.update(env_changes)
  result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout.split()


def test_a_number_sets_the_devices_and_a_thread_pool_with_room_for_them():
  cores = cpu_devices.usable_cores()
  out = _python("""
      import os, jax
      from transformer import cpu_devices
      count = cpu_devices.configure(3, lambda n: True)
      print(count, jax.local_device_count(), os.environ.get("PJRT_NPROC"))
      """)
  assert out == ["3", "3", str(cores + 3)]
  assert cpu_devices.thread_pool_size(2, 2) == 4  # the size that did not deadlock on 2 cores


def test_programs_that_never_communicate_get_one_thread_per_core():
  cores = cpu_devices.usable_cores()
  out = _python("""
      import os, jax
      from transformer import cpu_devices
      count = cpu_devices.configure(3, lambda n: True, collectives=False)
      print(count, jax.local_device_count(), os.environ.get("PJRT_NPROC"))
      """)
  assert out == ["3", "3", str(cores)]


def test_auto_defers_to_xla_flags_and_keeps_the_users_thread_pool():
  out = _python("""
      import os, jax
      from transformer import cpu_devices
      print(cpu_devices.configure("auto", lambda n: True), jax.local_device_count(),
            os.environ.get("PJRT_NPROC"))
      """, XLA_FLAGS="--xla_force_host_platform_device_count=5", PJRT_NPROC="7")
  assert out == ["None", "5", "7"]


def test_auto_is_one_device_per_core_not_for_several_processes_and_not_after_jax_started():
  cores = min(cpu_devices.usable_cores(), cpu_devices.AUTO_MAX_DEVICES)
  out = _python("""
      import jax, jax.numpy as jnp
      from transformer import cpu_devices
      from transformer.config import ConfigError
      print(cpu_devices.configure("auto", lambda n: True, multi_process=True))
      print(cpu_devices.configure("auto", lambda n: True), jax.local_device_count())
      jnp.ones(1).block_until_ready()
      print(cpu_devices.configure("auto", lambda n: True))
      try:  # another count than the running one
        cpu_devices.configure(9, lambda n: True)
      except ConfigError as e:
        print("ConfigError" if "before JAX starts its backends" in str(e) else e)
      """)
  assert out == ["None", str(cores), str(cores), "None", "ConfigError"]


def test_auto_keeps_one_device_for_models_as_wide_as_the_base_model():
  out = _python("""
      import jax
      from transformer import cpu_devices
      print(cpu_devices.configure("auto", lambda n: True, d_model=512), jax.local_device_count())
      """)
  assert out == ["1", "1"]
  out = _python("""
      import jax
      from transformer import cpu_devices
      print(cpu_devices.configure(2, lambda n: True, d_model=512), jax.local_device_count())
      """)
  assert out == ["2", "2"]  # a number is the user's choice, whatever the width
