"""The peers' side of benchmarks/peers.py: torch.nn.Transformer training and Hugging Face Marian
`generate`, on the shapes the driver passes. Runs as a worker of benchmarks/paired.py: builds the
workload, warms it up, then times one call (a training step, a `generate`) each time it is asked.

    python benchmarks/torch_peers.py train '{"d_model": 256, ...}'
    python benchmarks/torch_peers.py decode '{"d_model": 256, ..., "beam_size": 4}'

Needs `pip install -e ".[peers]"` (torch's CPU wheel and transformers). Nothing here is imported
by the library or the tests.
"""

from __future__ import annotations

import json
import math
import sys

import torch
from paired import serve
from torch import nn


class TorchTransformer(nn.Module):
  """torch.nn.Transformer as the paper's model: one embedding shared by source, target and the
  output projection (§3.4, scaled by sqrt(d_model)), sinusoidal positions (§3.5), post-norm."""

  def __init__(self, s: dict):
    super().__init__()
    d = s["d_model"]
    self.embed = nn.Embedding(s["vocab_size"], d)
    nn.init.normal_(self.embed.weight, std=d ** -0.5)
    self.core = nn.Transformer(d, s["num_heads"], s["num_encoder_layers"],
                               s["num_decoder_layers"], s["d_ff"], s["dropout"],
                               batch_first=True)
    position = torch.arange(s["length"])[:, None]
    rate = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    pe = torch.zeros(s["length"], d)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(position * rate), torch.cos(position * rate)
    self.register_buffer("pe", pe)
    self.drop = nn.Dropout(s["dropout"])
    self.scale = math.sqrt(d)

  def _in(self, ids):
    return self.drop(self.embed(ids) * self.scale + self.pe[:ids.shape[1]])

  def forward(self, inputs, targets_in):
    mask = nn.Transformer.generate_square_subsequent_mask(targets_in.shape[1])
    x = self.core(self._in(inputs), self._in(targets_in), tgt_mask=mask, tgt_is_causal=True)
    return x @ self.embed.weight.T


def train(s: dict):
  """A full training step (forward, label-smoothed loss, backward, Adam) as a callable."""
  torch.manual_seed(0)
  model = TorchTransformer(s).train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
  loss_fn = nn.CrossEntropyLoss(label_smoothing=s["label_smoothing"])
  rows, length, vocab = s["rows"], s["length"], s["vocab_size"]
  gen = torch.Generator().manual_seed(0)
  inputs = torch.randint(4, vocab, (rows, length), generator=gen)
  targets = torch.randint(4, vocab, (rows, length), generator=gen)
  targets_in = torch.cat([torch.full((rows, 1), 2), targets[:, :-1]], dim=1)   # BOS, shifted

  def step():
    logits = model(inputs, targets_in)
    loss = loss_fn(logits.reshape(-1, vocab), targets.reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

  return step


def decode(s: dict):
  """`generate` over one batch of random sources, exactly `new_tokens` each, as a callable."""
  from transformers import MarianConfig, MarianMTModel
  torch.manual_seed(0)
  config = MarianConfig(
      vocab_size=s["vocab_size"], d_model=s["d_model"], encoder_layers=s["num_encoder_layers"],
      decoder_layers=s["num_decoder_layers"], encoder_attention_heads=s["num_heads"],
      decoder_attention_heads=s["num_heads"], encoder_ffn_dim=s["d_ff"],
      decoder_ffn_dim=s["d_ff"], activation_function="relu", max_position_embeddings=512,
      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, scale_embedding=True,
      share_encoder_decoder_embeddings=True, tie_word_embeddings=True)
  model = MarianMTModel(config).eval()
  gen = torch.Generator().manual_seed(0)
  inputs = torch.randint(4, s["vocab_size"], (s["rows"], s["length"]), generator=gen)
  inputs[:, -1] = 1   # EOS last, as ours
  kwargs = dict(max_new_tokens=s["new_tokens"], min_new_tokens=s["new_tokens"],
                num_beams=s["beam_size"], do_sample=False, length_penalty=s["length_penalty"],
                early_stopping=False)

  def run():
    with torch.inference_mode():
      out = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), **kwargs)
    assert out.shape == (s["rows"], s["new_tokens"] + 1), out.shape   # start token + new ones
  return run


if __name__ == "__main__":
  what, settings = sys.argv[1], json.loads(sys.argv[2])
  call = {"train": train, "decode": decode}[what](settings)
  version = f"torch {torch.__version__}"
  if what == "decode":
    import transformers
    version += f", transformers {transformers.__version__}"
  serve(call, warmup=settings["warmup"],
        info={"threads": f"{torch.get_num_threads()} threads", "version": version})
