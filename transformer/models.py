"""The model a TransformerConfig names (`architecture`), its parameters and their count.

One place that maps `architecture` to a module, so the trainer, the workdir reader and the
benchmarks build either model the same way.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer import decoder_only, model
from transformer.config import TransformerConfig
from transformer.decoder_only import DecoderOnlyTransformer
from transformer.model import Transformer


def create(config: TransformerConfig) -> nn.Module:
  """The encoder-decoder Transformer or the decoder-only language model."""
  if config.architecture == "decoder_only":
    return DecoderOnlyTransformer(config)
  return Transformer(config)


def batch_forward(config: TransformerConfig):
  """forward(params, batch, rngs=None) -> the logits that predict batch["targets"]."""
  if config.architecture == "decoder_only":
    return decoder_only.batch_forward(config)
  return model.batch_forward(config)


def _init(config: TransformerConfig, rng: jax.Array, length: int) -> Any:
  dummy = jnp.ones((1, min(length, config.max_length)), jnp.int32)
  model = create(config.replace(deterministic=True, decode=False))
  args = (dummy,) if config.architecture == "decoder_only" else (dummy, dummy)
  return model.init(rng, *args)["params"]


def init_params(config: TransformerConfig, rng: jax.Array, length: int = 8) -> Any:
  """Fresh parameters; `init` is traced on shapes of `length` tokens. Works under jit and
  `jax.eval_shape`; called eagerly it compiles the initialisation once (tracing `model.init`
  op by op is slow)."""
  return jax.jit(_init, static_argnums=(0, 2))(config, rng, length)


def abstract_params(config: TransformerConfig, sharding=None) -> Any:
  """ShapeDtypeStructs of the parameters (no computation), on one device by default."""
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  shapes = jax.eval_shape(lambda r: _init(config, r, 8), jax.random.PRNGKey(0))
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), shapes)


def count_params(params: Any) -> int:
  """Number of parameters (arrays or ShapeDtypeStructs)."""
  return sum(int(x.size) for x in jax.tree.leaves(params))


def on_one_device(params: Any) -> Any:
  """Arrays replicated over several devices as their copy on this process's first device.

  Decoding, sampling and evaluation are one-device programs; given arrays replicated over
  several devices, jit runs the program once per device, which on CPU devices sharing the same
  cores (cpu_devices.py) only splits the cores between identical copies of the work. Sharded
  arrays (parallelism="fsdp") and single-device ones are returned as they are.
  """
  def local(x):
    if isinstance(x, jax.Array) and len(x.sharding.device_set) > 1 and x.is_fully_replicated:
      return x.addressable_data(0)
    return x
  return jax.tree.map(local, params)
