"""The paper's big model on WMT 2014 English-to-German (Table 3 "big"): 300k steps.

    python train.py --config=configs/wmt14_ende_big.py --workdir=runs/big

The base recipe (wmt14_ende_base.py) with Table 3's big sizes: d_model 1024, d_ff 4096, 16 heads,
P_drop 0.3 (the EN-DE big model's), 300,000 steps (3.5 days on 8 P100s in the paper). Same
batches of ~25,000 + 25,000 tokens; `--config=configs/wmt14_ende_big.py:K` accumulates K smaller
batches per update. FSDP spreads parameters and Adam state over the devices:
`--config.parallelism=fsdp`.
"""

from transformer.config_files import load_config_file


def get_config(grad_accum_steps="1"):
  config = load_config_file("wmt14_ende_base", grad_accum_steps)
  config.model.update(d_model=1024, d_ff=4096, num_heads=16, dropout_rate=0.3)
  config.num_train_steps = 300_000
  config.eval_every_steps = 10_000
  config.eval_bleu_examples = 500
  config.checkpoint_every_steps = 5000
  # §6.1 averages the last 20 checkpoints of the big models, written at 10-minute intervals
  # (checkpoint_every_minutes=10 from the base recipe): keep 20, average with --last=20.
  config.keep_checkpoints = 20
  return config
