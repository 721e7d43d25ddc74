"""Translation scores: sacreBLEU, chrF, the paper-style tokenized BLEU, exact match.

`score_translations(hypotheses, references, lang=...)` takes detokenized text, one hypothesis and
one reference per example, in the target language `lang`, and returns (all scores on a 0-100
scale):

  bleu            sacreBLEU corpus BLEU (tokenizer 13a, exponential smoothing, case-sensitive);
                  the comparable number today (Post, 2018).
  chrf            sacreBLEU corpus chrF2 (character 6-grams, beta 2).
  tokenized_bleu  BLEU as in the paper's setup, tensor2tensor's get_ende_bleu.sh: Moses'
                  tokenizer.perl -l LANG on both sides (sacremoses, escaping on as in the
                  script), hyphenated compounds split ("rich-text" -> "rich ##AT##-##AT## text"),
                  then multi-bleu.perl (BLEU on whitespace tokens, no smoothing, case-sensitive).
                  Set it beside Table 2, not beside sacreBLEU numbers.
  exact_match     percentage of hypotheses equal to their reference (surrounding whitespace
                  ignored).
  num_examples    number of pairs.
  sacrebleu_signature   "BLEU: <signature>; chrF: <signature>", to report with the scores.
"""

from __future__ import annotations

import functools
import re

from sacrebleu.metrics import BLEU, CHRF
from sacremoses import MosesTokenizer

# tensor2tensor's `perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g'`. Matches do not overlap, so
# "a-b-c" becomes "a ##AT##-##AT## b-c", as with Perl.
_COMPOUND = re.compile(r"(\S)-(\S)")


def split_compounds(line: str) -> str:
  """Puts hyphenated compounds in ATAT format: "rich-text" -> "rich ##AT##-##AT## text"."""
  return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


@functools.lru_cache(maxsize=None)
def _moses(lang: str) -> MosesTokenizer:
  return MosesTokenizer(lang=lang)


def paper_tokenize(line: str, lang: str = "de") -> str:
  """Tokenization for `tokenized_bleu`: `tokenizer.perl -l LANG`, then compounds split."""
  return split_compounds(_moses(lang).tokenize(line, return_str=True, escape=True))


def _check(hypotheses, references):
  for name, texts in (("hypotheses", hypotheses), ("references", references)):
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
      raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}.")
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
      raise TypeError(f"{name}[{bad}] is {type(texts[bad]).__name__}; expected str.")
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references; "
                     "expected one reference per hypothesis.")
  if not hypotheses:
    raise ValueError("No examples to score: hypotheses and references are empty.")


def score_translations(hypotheses: list[str], references: list[str], lang: str = "de") -> dict:
  """Corpus scores of detokenized hypotheses against one reference each (see module doc).

  `lang`, the target language, only selects the Moses rules of `tokenized_bleu`.
  """
  _check(hypotheses, references)
  hypotheses, references = list(hypotheses), list(references)
  bleu, chrf = BLEU(), CHRF()
  bleu_score = bleu.corpus_score(hypotheses, [references])
  chrf_score = chrf.corpus_score(hypotheses, [references])
  tokenized = BLEU(tokenize="none", smooth_method="none", force=True).corpus_score(
      [paper_tokenize(h, lang) for h in hypotheses],
      [[paper_tokenize(r, lang) for r in references]])
  exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references))
  return {
      "bleu": float(bleu_score.score),
      "chrf": float(chrf_score.score),
      "tokenized_bleu": float(tokenized.score),
      "exact_match": 100.0 * exact / len(hypotheses),
      "num_examples": len(hypotheses),
      "sacrebleu_signature": f"BLEU: {bleu.get_signature()}; chrF: {chrf.get_signature()}",
  }
