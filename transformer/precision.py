"""Matrix products whose results are float32 while their inputs stay in the compute dtype.

The attention logits (§3.2.1) and the vocabulary logits (§3.4) feed a softmax, so they are
accumulated and returned in float32 (`preferred_element_type`) even when the model computes in
bfloat16. Differentiated as is, such a product's backward pass would multiply the float32
cotangent by a bfloat16 operand, which XLA runs as a float32 matmul (on GPUs at TF32's rate at
best, half of bfloat16's). `einsum_float32` keeps the forward product and casts the cotangent
back to the operands' dtype, so the backward products run at the compute dtype's rate as every
other matmul of the step does; in float32 it is exactly `jnp.einsum`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def einsum_float32(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
  """jnp.einsum(spec, a, b) accumulated and returned in float32."""
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _forward(spec, a, b):
  return einsum_float32(spec, a, b), (a, b)


def _backward(spec, residuals, cotangent):
  a, b = residuals
  dtype = jnp.result_type(a.dtype, b.dtype)
  _, vjp = jax.vjp(lambda a, b: jnp.einsum(spec, a, b, preferred_element_type=dtype), a, b)
  return vjp(cotangent.astype(dtype))


einsum_float32.defvjp(_forward, _backward)
