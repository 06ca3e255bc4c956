"""The text stage's tokenizer training (`vlkd.data.text.train_tokenizer`: a character count, then `tokenizers`'
WordPiece trainer with the alphabet and its continuations fixed) against the trainer alone, same process, same corpus.

    python -m bench.tokenizer [--megabytes 50] [--vocab-size 30522] [--runs 3] [--corpus FILE]

The corpus is FILE, one paragraph a line, or a generated one: Zipf-distributed words over 20,000 invented ones,
with 1,500 rare letters (Yi syllables, each as frequent as the others) so that, as in Wikipedia, the corpus has more
characters than the alphabet keeps and some are tied at its cut. Each way trains `--runs` times: the table gives
seconds per training, the ratio, and how many different vocabularies the runs gave (1: reproducible).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from bench.common import machine
from vlkd.data.text import SPECIAL_TOKENS, train_tokenizer


def generated_corpus(path: Path, megabytes: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ren", "sto", "va", "pel", "tri", "dor", "su", "an", "bex", "qu", "ith", "ov"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(20_000)]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    rare = [chr(0xA000 + i) for i in range(1_500)]
    with open(path, "w", encoding="utf-8") as out:
        written, line = 0, 0
        while written < megabytes * 1e6:
            text = " ".join(rng.choices(words, weights, k=60)) + f" {rare[line % len(rare)]}{words[line % 100]} ."
            out.write(text + "\n")
            written, line = written + len(text.encode()) + 1, line + 1


def trainer_alone(path: Path, vocab_size: int) -> dict[str, int]:
    """What the stage did before: one pass of `tokenizers`' BERT WordPiece trainer, its defaults otherwise."""
    from tokenizers import BertWordPieceTokenizer

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    with open(path, encoding="utf-8") as lines:
        wordpiece.train_from_iterator(
            lines, vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS), show_progress=False
        )
    return wordpiece.get_vocab()


def vlkd(path: Path, vocab_size: int) -> dict[str, int]:
    def lines():
        with open(path, encoding="utf-8") as corpus:
            yield from corpus

    return train_tokenizer(lines, vocab_size, 2, True).get_vocab()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=50)
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=None)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus or Path(tmp) / "corpus.txt"
        if args.corpus is None:
            generated_corpus(corpus, args.megabytes)
        print(f"corpus: {corpus.stat().st_size / 1e6:.1f} MB, vocab_size {args.vocab_size}, {args.runs} runs each")
        seconds, vocabularies = {}, {}
        for name, train in (("trainer alone", trainer_alone), ("vlkd", vlkd)):
            started, made = time.perf_counter(), set()
            for _ in range(args.runs):
                vocab = train(corpus, args.vocab_size)
                made.add(tuple(sorted(vocab, key=vocab.__getitem__)))
            seconds[name], vocabularies[name] = (time.perf_counter() - started) / args.runs, len(made)
    print(f"{'way':<15}{'s/training':>12}{'ratio':>8}{'vocabularies':>14}")
    for name in seconds:
        ratio = seconds[name] / seconds["trainer alone"]
        print(f"{name:<15}{seconds[name]:>12.1f}{ratio:>7.2f}x{vocabularies[name]:>14}")


if __name__ == "__main__":
    main()
