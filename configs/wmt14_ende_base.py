"""The paper's base model on WMT 2014 English-to-German (§5, Table 3 "base"): 100k steps.

    python train.py --config=configs/wmt14_ende_base.py --workdir=runs/base

Batches of about 25,000 source + 25,000 target tokens (§5.1). On fewer or smaller devices keep
that size with gradient accumulation: `--config=configs/wmt14_ende_base.py:4` reads batches of
25,000 / 4 tokens and applies the update every 4 of them (any divisor works the same way).
The dataset must be prepared once (docs/data.md):
`python -m transformer.data.prepare --tfds_name=wmt14_translate/de-en`.
"""

from transformer.config_files import load_config_file


def get_config(grad_accum_steps="1"):
  config = load_config_file("default")
  accum = int(grad_accum_steps or 1)

  # Data: tfds wmt14_translate/de-en read as en -> de; newstest2013 validates, newstest2014 tests.
  config.dataset = "tfds"
  config.tfds_name = "wmt14_translate/de-en"
  config.source_lang = "en"
  config.target_lang = "de"
  config.train_split = "train"
  config.eval_split = "validation"      # newstest2013
  config.test_split = "test"            # newstest2014
  config.vocab_size = 37000             # §5.1: shared source-target BPE vocabulary of ~37000
  config.tokenizer_model = "bpe"
  config.tokenizer_sample_sentences = 1_000_000
  config.max_length = 256
  config.overlong = "drop"
  config.batching = "tokens"            # §5.1: batched by approximate sequence length
  config.tokens_per_batch = 25_000 // accum
  config.token_budget = "real"          # §5.1: ~25,000 real source and target tokens, not slots
  config.eval_batch_size = 128
  config.num_eval_batches = 0           # the whole of newstest2013

  # Model: Table 3 "base", shared embeddings (§3.4).
  config.model.update(
      d_model=512, d_ff=2048, num_heads=8, num_encoder_layers=6, num_decoder_layers=6,
      dropout_rate=0.1, attention_dropout_rate=0.0, share_embeddings=True,
      positional_encoding="sinusoidal", norm_order="post", attention_impl="auto",
      attention_bias=False, scan_layers=False, remat_policy="none",
      dtype="bfloat16", param_dtype="float32")
  # attention_impl="auto": cuDNN flash attention on NVIDIA GPUs, splash on a single TPU
  # device, XLA's attention otherwise (each call's kernel is logged once). scan_layers=True
  # compiles 3-4x faster but ran 35% slower per step on an H100 (docs/performance.md);
  # remat_policy="dots" or "full" trades compute for memory.

  # Optimization: §5.3 Adam(0.9, 0.98, 1e-9), lr = d_model^-0.5 min(step^-0.5, step 4000^-1.5).
  config.schedule = "paper"
  config.learning_rate = 1.0
  config.warmup_steps = 4000
  config.adam_b1, config.adam_b2, config.adam_eps = 0.9, 0.98, 1e-9
  config.weight_decay = 0.0
  config.grad_clip_norm = 0.0
  config.grad_accum_steps = accum
  config.label_smoothing = 0.1          # §5.4

  # The run: 100k steps (12 hours on 8 P100s in the paper).
  config.num_train_steps = 100_000
  config.log_every_steps = 100
  config.eval_every_steps = 4000        # a multiple of checkpoint_every_steps,
                                        # so "best" has a choice
  config.eval_bleu_examples = 500       # newstest2013 sentences translated for BLEU
                                        # at each evaluation
  config.checkpoint_every_steps = 2000
  config.checkpoint_every_minutes = 10.0  # §6.1: "checkpoints, which were written at 10-minute
                                        # intervals"; averaged with transformer.average --last=5
  config.keep_checkpoints = 5           # §6.1 averages the last 5 checkpoints
  config.parallelism = "data"

  # Decoding: §6.1 beam 4, length penalty 0.6, max length input + 50.
  config.beam_size = 4
  config.length_penalty = 0.6
  config.max_decode_extra = 50
  return config
