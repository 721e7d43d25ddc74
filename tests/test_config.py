"""TransformerConfig: presets and the messages bad values get."""

import pytest

from transformer import config as C


def test_presets_match_table_3():
  base, big = C.base(), C.big()
  assert (base.num_encoder_layers, base.d_model, base.d_ff, base.num_heads, base.dropout_rate) == (
      6, 512, 2048, 8, 0.1)
  assert (big.num_decoder_layers, big.d_model, big.d_ff, big.num_heads, big.dropout_rate) == (
      6, 1024, 4096, 16, 0.3)
  assert base.head_dim == 64 and base.norm_order == "post"
  assert base.positional_encoding == "sinusoidal" and base.share_embeddings


@pytest.mark.parametrize("changes,message", [
    (dict(d_model=510, num_heads=8), r"d_model=510 is not divisible by num_heads=8"),
    (dict(dropout_rate=1.0), r"dropout_rate=1.0 must be in \[0, 1\)"),
    (dict(dropout_rate=-0.1), r"dropout_rate=-0.1 must be in \[0, 1\)"),
    (dict(norm_order="sandwich"), r"norm_order='sandwich' is unknown; allowed: post, pre"),
    (dict(positional_encoding="rope"),
     r"positional_encoding='rope' is unknown; allowed: sinusoidal, learned"),
    (dict(attention_impl="flash"),
     r"attention_impl='flash' is unknown; allowed: auto, einsum, xla, cudnn, pallas_gpu, splash"),
    (dict(remat_policy="some"), r"remat_policy='some' is unknown; allowed: none, dots, full"),
    (dict(dtype="float8"), r"dtype='float8' is unknown"),
    (dict(vocab_size=0), r"vocab_size=0 must be a positive integer"),
])
def test_bad_values_name_the_field_the_value_and_what_is_allowed(changes, message):
  with pytest.raises(ValueError, match=message):
    C.base(**changes)
  with pytest.raises(ValueError, match=message):  # `.replace` validates too.
    C.base().replace(**changes)
