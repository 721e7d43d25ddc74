"""A character-level GPT on tiny Shakespeare, as nanoGPT's shakespeare_char; minutes on a CPU.

    python train.py --config=configs/shakespeare_char.py --config.data_dir=PATH/TO/tinyshakespeare

`data_dir` holds `input.txt` (nanoGPT's data/shakespeare_char/input.txt, 1,115,394 characters):
the first 90% trains, the last 10% validates. The default is the model of nanoGPT's README CPU
recipe (4 layers, 4 heads, width 128, context 64, batch 12, no dropout), trained for 1,300 steps
at a peak learning rate of 3e-3 instead of 2,000 at 1e-3, validated once at the end: it reaches
nanoGPT's validation loss sooner (docs/language_model.md compares the two on one machine).
`--config=configs/shakespeare_char.py:large` is a larger model for 30 minutes of a 2-core CPU;
`:gpt` is nanoGPT's own shakespeare_char size (6 layers, 6 heads, width 384, context 256, batch
64, dropout 0.2, 5,000 steps) for a GPU.

Every config of the language-model task has the keys of this file.
"""

import ml_collections

SIZES = {
    # layers, heads, width, context, batch, steps, dropout, warmup, learning rate, eval every
    "cpu": (4, 4, 128, 64, 12, 1300, 0.0, 100, 3e-3, 1300),
    "large": (6, 6, 192, 64, 32, 2700, 0.0, 100, 2e-3, 900),
    "gpt": (6, 6, 384, 256, 64, 5000, 0.2, 100, 1e-3, 500),
}


def get_config(size: str = "cpu") -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f"configs/shakespeare_char.py:{size}: unknown size; choose one of "
                     f"{', '.join(SIZES)}.")
  layers, heads, width, context, batch, steps, dropout, warmup, lr, eval_every = SIZES[size]
  config = ml_collections.ConfigDict()
  config.task = "language_model"

  # --- Data (transformer/data/lm_data.py) ---
  config.dataset = "text_file"      # "text_file" | "tfds"
  config.text_file = ""             # a text file; "" = data_dir/input.txt
  config.data_dir = ""              # required for "text_file" unless text_file is set
  config.tfds_name = ""             # for "tfds", e.g. "tiny_shakespeare" (prepared beforehand)
  config.tfds_split = "train"
  config.tfds_data_dir = ""
  config.tfds_text_key = "text"
  config.tokenizer = "characters"   # "characters" (nanoGPT's shakespeare_char) | "sentencepiece"
  config.tokenizer_model = "unigram"  # for "sentencepiece": "unigram" | "bpe"
  config.vocab_size = 0             # for "sentencepiece"; characters count themselves
  config.validation_fraction = 0.1  # the last 10% of the text validates (nanoGPT's split)
  config.max_length = context       # the context: windows of max_length + 1 tokens
  config.batch_size = batch         # windows per global batch
  config.eval_batch_size = 256      # windows per validation batch
  config.num_eval_batches = 0       # 0 = the whole validation text at every evaluation
  config.prefetch = 4               # batches prepared ahead in a background thread

  # --- Model (transformer/config.py TransformerConfig; GPT-2's choices) ---
  config.model = ml_collections.ConfigDict(dict(
      d_model=width, d_ff=4 * width, num_heads=heads, num_encoder_layers=0,
      num_decoder_layers=layers, dropout_rate=dropout, attention_dropout_rate=0.0,
      share_embeddings=True, scale_embeddings=False, positional_encoding="learned",
      norm_order="pre", activation="gelu", attention_impl="einsum", attention_bias=False,
      scan_layers=False, remat_policy="none", dtype="float32", param_dtype="float32",
      layer_norm_epsilon=1e-5))

  # --- Optimization (nanoGPT's: AdamW, cosine with warmup to a tenth, clipping at 1) ---
  config.schedule = "cosine"
  config.learning_rate = lr
  config.final_learning_rate_fraction = 0.1
  config.warmup_steps = warmup
  config.adam_b1 = 0.9
  config.adam_b2 = 0.99
  config.adam_eps = 1e-8
  config.weight_decay = 0.1         # decoupled, weight matrices only
  config.grad_clip_norm = 1.0
  config.grad_accum_steps = 1
  config.label_smoothing = 0.0

  # --- The run ---
  config.seed = 0
  config.num_train_steps = steps
  config.train_minutes = 0.0        # > 0: the step count from a wall-clock budget (default.py)
  config.budget_overplan = 0.0      # with train_minutes: the count planned past it (default.py)
  config.log_every_steps = 100
  config.eval_every_steps = eval_every  # the whole validation text each time
  config.checkpoint_every_steps = 1000
  config.checkpoint_every_minutes = 0.0
  config.keep_checkpoints = 3
  config.parallelism = "data"
  config.cpu_devices = "auto"       # one JAX device per CPU core (transformer/cpu_devices.py)
  config.compilation_cache_dir = "auto"

  # --- Samples (printed at every evaluation and at the end; transformer/sampling.py) ---
  config.sample_prompt = "\n"
  config.sample_length = 200        # new tokens per sample
  config.sample_temperature = 0.8
  config.sample_top_k = 200
  config.num_samples_to_print = 2
  return config
