"""Tests of transformer/scores.py; expected BLEU values are computed by hand below."""

import math

import pytest

from transformer.scores import paper_tokenize, score_translations, split_compounds


def test_sacrebleu_matches_hand_computed_bleu():
  hypotheses = ["the cat sat on the mat", "a dog"]
  references = ["the cat is on the mat", "a dog barks loudly"]
  # Clipped n-gram matches / hypothesis n-grams, summed over both sentences (13a leaves these
  # lowercase words as they are):
  #   1-grams: the x2, cat, on, mat + a, dog          = 5/6 + 2/2 = 7/8
  #   2-grams: "the cat", "on the", "the mat" + "a dog" = 3/5 + 1/1 = 4/6
  #   3-grams: "on the mat"                           = 1/4 + 0/0 = 1/4
  #   4-grams: none                                   = 0/3, exp smoothing: 1 / (2 * 3) = 1/6
  # Brevity penalty: hypothesis length 8 < reference length 10 -> exp(1 - 10/8).
  expected = 100 * math.exp(1 - 10 / 8) * (7 / 8 * 4 / 6 * 1 / 4 * 1 / 6) ** 0.25
  scores = score_translations(hypotheses, references)
  assert scores["bleu"] == pytest.approx(expected, abs=1e-9)
  assert scores["num_examples"] == 2
  assert scores["exact_match"] == 0.0
  assert "tok:13a" in scores["sacrebleu_signature"]
  assert "smooth:exp" in scores["sacrebleu_signature"]
  assert "chrF" in scores["sacrebleu_signature"]
  assert 0 < scores["chrf"] < 100


def test_tokenized_bleu_splits_compounds_and_does_not_smooth():
  hypotheses = ["the rich-text format is good."]
  references = ["the rich-text format is very good."]
  # Tokens: the rich ##AT##-##AT## text format is good .           (8)
  #         the rich ##AT##-##AT## text format is very good .      (9)
  #   1-grams 8/8; 2-grams 6/7 (not "is good"); 3-grams 4/6; 4-grams 3/5; BP exp(1 - 9/8).
  expected = 100 * math.exp(1 - 9 / 8) * (1 * 6 / 7 * 4 / 6 * 3 / 5) ** 0.25
  scores = score_translations(hypotheses, references)
  assert scores["tokenized_bleu"] == pytest.approx(expected, abs=1e-9)
  # multi-bleu.perl does not smooth: no 4-gram match gives 0 (sacreBLEU's smoothed BLEU does not).
  scores = score_translations(["the cat sat on the mat"], ["the cat is on the mat"])
  assert scores["tokenized_bleu"] == 0.0
  assert scores["bleu"] > 0.0


def test_compound_splitting_follows_the_perl_one_liner():
  assert split_compounds("rich-text format") == "rich ##AT##-##AT## text format"
  assert split_compounds("a-b-c") == "a ##AT##-##AT## b-c"  # non-overlapping, as in Perl
  assert split_compounds("a - b") == "a - b"
  # tokenizer.perl -l de: escapes quotes, keeps "Dr." (a German non-breaking prefix) and "3,5",
  # splits German quotes and the final period; then the compounds.
  assert paper_tokenize('Er sagte: "Hallo-Welt", 3,5 Mio. Dr. Müller kam „heute“.') == (
      'Er sagte : &quot; Hallo ##AT##-##AT## Welt &quot; , 3,5 Mio. Dr. Müller kam „ heute “ .')
  assert paper_tokenize("Mio. Leute", lang="en") == "Mio . Leute"  # English rules differ


def test_exact_match_and_perfect_scores():
  texts = ["Guten Morgen .", "Wie geht es dir ?", "Danke"]
  scores = score_translations(texts, [" Guten Morgen . ", "Wie geht es Ihnen ?", "Danke"])
  assert scores["exact_match"] == pytest.approx(200 / 3)
  scores = score_translations(texts, texts)
  assert scores["exact_match"] == 100.0
  assert scores["bleu"] == pytest.approx(100.0)
  assert scores["chrf"] == pytest.approx(100.0)


def test_bad_inputs_fail_clearly():
  with pytest.raises(ValueError, match="empty"):
    score_translations([], [])
  with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
    score_translations(["a", "b"], ["a"])
  with pytest.raises(TypeError, match="list of strings"):
    score_translations("a b", "a b")
  with pytest.raises(TypeError, match=r"hypotheses\[1\]"):
    score_translations(["a", None], ["a", "b"])
