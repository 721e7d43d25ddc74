"""The input pipeline: sources (tfds, local text, the number task), SentencePiece, batching."""

from transformer.data.pipeline import (
    DataError,
    Tokenizer,
    get_tokenizer,
    load_pairs,
    make_eval_batches,
    make_train_iterator,
)

__all__ = ["DataError", "Tokenizer", "get_tokenizer", "load_pairs", "make_eval_batches",
           "make_train_iterator"]
