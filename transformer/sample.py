"""Samples text from a trained language model: `python -m transformer.sample --workdir=DIR`.

    python -m transformer.sample --workdir=runs/shakespeare --prompt="ROMEO:" \\
        --max_new_tokens=500 --temperature=0.8 --top_k=200 --num_samples=3 --seed=1

Loads WORKDIR's tokenizer and checkpoint (`--checkpoint=latest|best|averaged|STEP|DIR`) and
prints `num_samples` continuations of the prompt, separated by lines of dashes, as nanoGPT's
sample.py. All samples come from one compiled loop (transformer/sampling.py); temperature 0 is
greedy. An empty prompt starts from a newline.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from transformer import compilation_cache
from transformer import workdir as workdir_lib
from transformer.cli import fail
from transformer.tasks.language_model import generate
from transformer.workdir import WorkdirError

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "A language model's training workdir.")
  flags.DEFINE_string(
      "checkpoint", "latest", "latest | best | averaged | a step | a checkpoint directory.")
  flags.DEFINE_string("prompt", "\n", "The text to continue (\\n by default).")
  flags.DEFINE_integer("max_new_tokens", 500, "Tokens to generate per sample.")
  flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 = greedy (argmax).")
  flags.DEFINE_integer("top_k", 200, "Sample among the k most likely tokens (0 = all).")
  flags.DEFINE_integer("num_samples", 3, "Samples to draw.")
  flags.DEFINE_integer("seed", 1, "Random seed (the same seed gives the same samples).")


def _check_flags() -> None:
  for name in ("max_new_tokens", "num_samples"):
    if FLAGS[name].value < 1:
      fail(f"--{name}={FLAGS[name].value} must be at least 1.")
  if FLAGS.temperature < 0:
    fail(f"--temperature={FLAGS.temperature} must be >= 0 (0 = greedy).")
  if FLAGS.top_k < 0:
    fail(f"--top_k={FLAGS.top_k} must be >= 0 (0 = the whole vocabulary).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    fail("--workdir is required: a language model's training workdir.")
  _check_flags()
  logging.set_verbosity(logging.WARNING)
  compilation_cache.enable("auto")
  try:
    tokenizer = workdir_lib.load_tokenizer(FLAGS.workdir)
    params, model_config, info = workdir_lib.load_params(FLAGS.workdir, FLAGS.checkpoint)
    if model_config.architecture != "decoder_only":
      raise WorkdirError(f"{FLAGS.workdir} holds a translation model; translate with `python "
                         f"-m transformer.translate --workdir={FLAGS.workdir}` instead.")
    texts = generate(model_config, params, tokenizer, FLAGS.prompt,
                     max_new_tokens=FLAGS.max_new_tokens, temperature=FLAGS.temperature,
                     top_k=FLAGS.top_k, num_samples=FLAGS.num_samples, seed=FLAGS.seed)
  except (WorkdirError, ValueError) as e:
    fail(e)
  print(f"# {info.describe()}", file=sys.stderr)
  for text in texts:
    print(text)
    print("---------------")


if __name__ == "__main__":
  define_flags()
  app.run(main)
