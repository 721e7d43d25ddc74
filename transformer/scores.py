"""Translation scores: sacreBLEU, chrF, the paper-style tokenized BLEU, exact match.

`score_translations(hypotheses, references)` takes detokenized text, one hypothesis and one
reference per example, and returns (all scores on a 0-100 scale):

  bleu            sacreBLEU corpus BLEU (tokenizer 13a, exponential smoothing, case-sensitive);
                  the comparable number today (Post, 2018).
  chrf            sacreBLEU corpus chrF2 (character 6-grams, beta 2).
  tokenized_bleu  BLEU as in the paper's setup, tensor2tensor's get_ende_bleu.sh: tokenize both
                  sides, split hyphenated compounds ("rich-text" -> "rich ##AT##-##AT## text"),
                  then multi-bleu.perl (BLEU on whitespace tokens, no smoothing, case-sensitive).
                  The tokenizer here is sacreBLEU's 13a (mteval-v13a), not Moses' tokenizer.perl
                  -l de as in t2t: they agree on most text, but 13a splits "-" after a digit and
                  abbreviation periods ("Dr."), and does not split non-ASCII punctuation (German
                  quotes „ “). Expect a few tenths of a point of difference from the paper's setup.
  exact_match     percentage of hypotheses equal to their reference (surrounding whitespace
                  ignored).
  num_examples    number of pairs.
  sacrebleu_signature   "BLEU: <signature>; chrF: <signature>", to report with the scores.
"""

from __future__ import annotations

import re

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

# tensor2tensor's `perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g'`. Matches do not overlap, so
# "a-b-c" becomes "a ##AT##-##AT## b-c", as with Perl.
_COMPOUND = re.compile(r"(\S)-(\S)")


def split_compounds(line: str) -> str:
  """Puts hyphenated compounds in ATAT format: "rich-text" -> "rich ##AT##-##AT## text"."""
  return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


def paper_tokenize(line: str, _tokenizer=Tokenizer13a()) -> str:
  """Tokenization for `tokenized_bleu`: 13a tokens, then compounds split."""
  return split_compounds(_tokenizer(line))


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


def score_translations(hypotheses: list[str], references: list[str]) -> dict:
  """Corpus scores of detokenized hypotheses against one reference each (see module doc)."""
  _check(hypotheses, references)
  hypotheses, references = list(hypotheses), list(references)
  bleu, chrf = BLEU(), CHRF()
  bleu_score = bleu.corpus_score(hypotheses, [references])
  chrf_score = chrf.corpus_score(hypotheses, [references])
  tokenized = BLEU(tokenize="none", smooth_method="none", force=True).corpus_score(
      [paper_tokenize(h) for h in hypotheses], [[paper_tokenize(r) for r in references]])
  exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references))
  return {
      "bleu": float(bleu_score.score),
      "chrf": float(chrf_score.score),
      "tokenized_bleu": float(tokenized.score),
      "exact_match": 100.0 * exact / len(hypotheses),
      "num_examples": len(hypotheses),
      "sacrebleu_signature": f"BLEU: {bleu.get_signature()}; chrF: {chrf.get_signature()}",
  }
