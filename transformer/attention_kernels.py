"""Fused kernels for §3.2.1's scaled dot-product attention, and the rule that picks one per call.

Every kernel computes softmax(Q K^T / sqrt(d_k)) V with float32 logits and softmax, whatever the
compute dtype, and takes the same mask description, `AttentionMask`: segment ids per query and
per key (0 = padding; packed rows number their pairs 1, 2, ...) and a static `causal` flag. Each
kernel turns that into what it needs:

  einsum      the plain reference: a dense [batch, 1, q, k] boolean mask (attention.py).
  xla         `jax.nn.dot_product_attention(implementation="xla")`: XLA's composed attention
              with the dense mask; any platform, any shape.
  cudnn       `jax.nn.dot_product_attention(implementation="cudnn")`: cuDNN's flash attention on
              NVIDIA GPUs; bfloat16/float16, head dim a multiple of 8 (at most 128, 256 on
              Hopper); padding as sequence lengths, the decoder's mask as `is_causal`. Packed
              rows have no public cuDNN form in jax, so it does not serve them.
  pallas_gpu  jax's Pallas (Triton) flash attention with segment ids: packed self-attention on
              GPUs (one segment array serves queries and keys, so not cross-attention).
  splash      jax's Pallas splash attention for TPUs: segment ids for padding and packing, a
              causal or full mask; sequence lengths a multiple of 128.
  The two Pallas kernels serve single-device runs only for now: a pallas_call has no
  partitioning rule, so with several devices they would need a shard_map (not built yet).

`choose_kernel(requested, call)` returns the kernel that runs and, when it differs from the
request, why. `attention_impl="auto"` takes the fastest kernel that serves the call (see
`AUTO_PREFERENCE`); a kernel named explicitly runs when it can and otherwise falls back to "xla"
with a warning logged once per reason. Attention-probability dropout needs the weights, so
training with `attention_dropout_rate > 0` runs the einsum path, also announced once.
"""

from __future__ import annotations

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
from absl import logging

Array = jax.Array

# "dot_product" is the name this option had before "xla" and "cudnn" were separate choices.
ALIASES = {"dot_product": "xla"}
# The order "auto" tries, per platform: measured on an H100 (docs/performance.md) for GPUs.
AUTO_PREFERENCE = {
    "gpu": ("cudnn", "pallas_gpu", "xla"),
    "tpu": ("splash", "xla"),
    "cpu": ("xla",),
}
_ANNOUNCED: set[str] = set()


@flax.struct.dataclass
class AttentionMask:
  """Which keys each query may see: same non-zero segment, and key <= query when `causal`.

  Unpacked rows use segment ids `tokens != PAD` (1 for tokens, 0 for padding), which the
  batching code places at the end of each row, so the ids also give the sequence lengths.
  """
  query_segments: Array  # [batch, q_len] int32
  key_segments: Array  # [batch, k_len] int32
  causal: bool = flax.struct.field(pytree_node=False, default=False)
  packed: bool = flax.struct.field(pytree_node=False, default=False)

  def dense(self) -> Array:
    """Boolean [batch, 1, q_len, k_len], True where attention is allowed."""
    q, k = self.query_segments, self.key_segments
    mask = (q[:, :, None] == k[:, None, :]) & (k[:, None, :] != 0)
    if self.causal:
      mask = mask & jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
    return mask[:, None]


@dataclasses.dataclass(frozen=True)
class AttentionCall:
  """The static facts about one attention call that decide which kernels can serve it."""
  platform: str  # jax.default_backend(): "cpu", "gpu" (also "cuda"), "tpu"
  dtype: str  # "float32", "bfloat16", "float16"
  head_dim: int
  q_len: int
  k_len: int
  causal: bool = False
  packed: bool = False
  dense_mask: bool = False  # an arbitrary boolean mask (the decoding cache's step mask)
  gpu_compute_capability: float | None = None
  devices: int = 1  # jax.device_count(): the Pallas kernels are not partitioned across devices

  @property
  def is_self_attention(self) -> bool:
    return self.q_len == self.k_len


def compute_capability() -> float | None:
  """The first device's CUDA compute capability (9.0 on Hopper), or None off NVIDIA GPUs."""
  value = getattr(jax.devices()[0], "compute_capability", None)
  return float(value) if value else None


def _pallas_gpu_block(length: int) -> int:
  return min(64, length)


def unsupported_reason(kernel: str, call: AttentionCall) -> str | None:
  """Why `kernel` cannot serve `call`, or None when it can."""
  platform = "gpu" if call.platform in ("gpu", "cuda", "rocm") else call.platform
  if kernel in ("einsum", "xla"):
    return None
  if call.dense_mask:
    return "the call has an arbitrary mask (the decoding cache's), not segments"
  if kernel == "cudnn":
    if platform != "gpu":
      return f"cuDNN runs on NVIDIA GPUs, not on {call.platform}"
    if call.dtype not in ("bfloat16", "float16"):
      return f"cuDNN's flash attention takes bfloat16 or float16, not {call.dtype}"
    max_head = 256 if (call.gpu_compute_capability or 0) >= 9.0 else 128
    if call.head_dim % 8 or call.head_dim > max_head:
      return (f"cuDNN needs a head dim that is a multiple of 8 and <= {max_head}, "
              f"not {call.head_dim}")
    if call.packed:
      return "packed rows (segment ids) have no cuDNN form in jax.nn.dot_product_attention"
    if call.causal and not call.is_self_attention:
      return "cuDNN's causal mask needs as many queries as keys"
    return None
  if kernel in ("pallas_gpu", "splash") and call.devices > 1:
    # A Pallas call has no partitioning rule: under a data-parallel jit XLA would gather the
    # whole batch onto every device. (A shard_map around it is the way; not built yet.)
    return f"the Pallas kernels are not partitioned across devices yet ({call.devices} here)"
  if kernel == "pallas_gpu":
    if platform != "gpu":
      return f"Pallas GPU attention runs on GPUs, not on {call.platform}"
    if not call.is_self_attention:
      return "Pallas GPU attention takes one segment array, so only self-attention"
    block = _pallas_gpu_block(call.q_len)
    if call.q_len % block:
      return f"Pallas GPU attention needs a length divisible by {block}, not {call.q_len}"
    return None
  if kernel == "splash":
    if platform != "tpu":
      return f"splash attention runs on TPUs, not on {call.platform}"
    if call.q_len % 128 or call.k_len % 128:
      return f"splash attention needs lengths divisible by 128, not {call.q_len}x{call.k_len}"
    return None
  return f"unknown kernel {kernel!r}"


def announce(message: str, *, warning: bool) -> None:
  """Logs `message` once per process (kernel choices are made at every trace)."""
  if message in _ANNOUNCED:
    return
  _ANNOUNCED.add(message)
  (logging.warning if warning else logging.info)(message)


def choose_kernel(requested: str, call: AttentionCall) -> tuple[str, str | None]:
  """(kernel that runs, why it is not the one requested or None). Pure: logs nothing."""
  requested = ALIASES.get(requested, requested)
  if requested == "auto":
    platform = "gpu" if call.platform in ("gpu", "cuda", "rocm") else call.platform
    for kernel in AUTO_PREFERENCE.get(platform, ("xla",)):
      if unsupported_reason(kernel, call) is None:
        return kernel, None
    return "xla", None
  reason = unsupported_reason(requested, call)
  if reason is None:
    return requested, None
  return "xla", reason


def describe(call: AttentionCall) -> str:
  mask = "dense mask" if call.dense_mask else (
      ("packed " if call.packed else "padded ") + ("causal" if call.causal else "full"))
  return f"{call.q_len}x{call.k_len}, head dim {call.head_dim}, {call.dtype}, {mask}"


def select(requested: str, call: AttentionCall) -> str:
  """`choose_kernel`, with the choice logged once (a warning when it is a fallback)."""
  kernel, reason = choose_kernel(requested, call)
  if reason is not None:
    announce(f"attention_impl={requested!r} cannot serve attention {describe(call)}: {reason}; "
             f"using {kernel!r} instead.", warning=True)
  else:
    announce(f"attention ({describe(call)}) runs {kernel!r}"
             + (" (attention_impl='auto')" if requested == "auto" else ""), warning=False)
  return kernel


def _lengths(segments: Array) -> Array:
  return jnp.sum(segments != 0, axis=-1).astype(jnp.int32)


def xla_attention(query: Array, key: Array, value: Array, mask: AttentionMask | Array | None):
  if isinstance(mask, AttentionMask):
    mask = mask.dense()
  if mask is not None:
    mask = jnp.broadcast_to(mask, (query.shape[0], mask.shape[1], query.shape[1], key.shape[1]))
  return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="xla")


def cudnn_attention(query: Array, key: Array, value: Array, mask: AttentionMask | None):
  """cuDNN flash attention; padding by lengths (rows are padded at the end)."""
  kwargs = {}
  if mask is not None:
    kwargs = dict(is_causal=mask.causal, query_seq_lengths=_lengths(mask.query_segments),
                  key_value_seq_lengths=_lengths(mask.key_segments))
  return jax.nn.dot_product_attention(query, key, value, implementation="cudnn", **kwargs)


def pallas_gpu_attention(query: Array, key: Array, value: Array, mask: AttentionMask | None, *,
                         interpret: bool = False):
  """Pallas flash attention with segment ids ([batch, len, heads, depth] layout)."""
  from jax.experimental.pallas.ops.gpu import attention as gpu_attention
  block = _pallas_gpu_block(query.shape[1])
  sizes = gpu_attention.BlockSizes(block_q=block, block_k=block, block_q_dkv=block,
                                   block_kv_dkv=block, block_q_dq=block, block_kv_dq=block)
  segments = None if mask is None else mask.query_segments
  causal = bool(mask is not None and mask.causal)
  return gpu_attention.mha(query, key, value, segments, sm_scale=query.shape[-1] ** -0.5,
                           causal=causal, block_sizes=sizes, interpret=interpret)


@functools.lru_cache(maxsize=None)
def _splash_kernel(heads: int, q_len: int, k_len: int, causal: bool, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks
  one = masks.CausalMask((q_len, k_len)) if causal else masks.FullMask((q_len, k_len))
  with jax.ensure_compile_time_eval():  # the mask's block tables are constants, not tracers
    kernel = splash.make_splash_mha(masks.MultiHeadMask([one] * heads), head_shards=1,
                                    q_seq_shards=1, interpret=interpret)
  return kernel, splash.SegmentIds


def splash_attention(query: Array, key: Array, value: Array, mask: AttentionMask | None, *,
                     interpret: bool = False):
  """TPU splash attention; takes [batch, heads, len, depth], so the heads move in and out."""
  batch, q_len, heads, depth = query.shape
  k_len = key.shape[1]
  causal = bool(mask is not None and mask.causal)
  kernel, segment_ids = _splash_kernel(heads, q_len, k_len, causal, interpret)
  q, k, v = (jnp.swapaxes(x, 1, 2) for x in (query * depth ** -0.5, key, value))
  if mask is None:
    out = jax.vmap(kernel)(q, k, v)
  else:
    ids = segment_ids(mask.query_segments, mask.key_segments)
    out = jax.vmap(lambda q, k, v, ids: kernel(q, k, v, segment_ids=ids))(q, k, v, ids)
  return jnp.swapaxes(out, 1, 2)


FUSED = {"xla": xla_attention, "cudnn": cudnn_attention, "pallas_gpu": pallas_gpu_attention,
         "splash": splash_attention}
