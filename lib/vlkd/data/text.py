"""The text stage's steps (Sec. 4.1, 4.3): paragraphs (Wiki103-layout lines, or a videos folder's captions, Table 2)
-> BERT uncased WordPiece -> token ids -> sequences of at most `max_len` tokens, [CLS] ... [SEP] -> the `corpus`
artifact's token shards.

The `corpus` format: `train/shard-NNNNN.parquet` and `validation/shard-NNNNN.parquet`, one row per sequence
(`input_ids` list<int32> including [CLS] and [SEP], `length` int32) in row groups of `GROUP_ROWS`, and `index.json`:
`{format, max_len, shard_size, row_group_size, seed, splits: {train|validation: {sequences, tokens,
shards: [{path, sequences, tokens}]}}}`, shard paths relative to the corpus folder. `index.json` is the
authority on which shards exist: readers list shards from it, never from the folder.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlkd.data.captions import Caption, read_captions
from vlkd.errors import DataError, NotFoundError

if TYPE_CHECKING:
    from tokenizers import BertWordPieceTokenizer, Tokenizer
    from transformers import BertTokenizerFast

log = logging.getLogger("vlkd.text")

FORMAT = "vlkd.corpus/v1"
INDEX = "index.json"
VOCAB = "vocab.txt"
SPLITS = ("train", "validation")
# BERT's special tokens. A trained vocabulary starts with them, so [PAD] is id 0 as in bert-base-uncased
# (whose [UNK], [CLS], [SEP], [MASK] sit at 100-103, after its [unusedN] slots).
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
GROUP_ROWS = 1024
"""sequences per Parquet row group: what training reads at a time from a shard (`vlkd.data.order`)"""
SHARD_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("length", pa.int32())])

# Wiki103 titles and section headers: " = Title = ", " = = Section = = ".
_HEADER = re.compile(r"^(?:= )+.*(?: =)+$")
# Wiki103's split hyphens and number separators: "state @-@ of @-@ the @-@ art", "1 @,@ 000", "3 @.@ 5".
_WIKI103_SPLIT = re.compile(r" @([-,.])@ ")


def corpus_lines(lines: Iterable[str]) -> Iterator[str]:
    """Paragraphs of a corpus in Wiki103's layout (one paragraph per line): stripped, without titles, section
    headers and blank lines.

    Wiki103's split markers are joined back ("1 @,@ 000" -> "1,000"). BERT's pre-tokenizer splits on the
    punctuation anyway, so the tokens are those of the original Wikipedia text; kept, every marker would add two
    "@" tokens that no downstream text has. Tan and Bansal's released code keeps them (a Fidelity deviation).
    """
    for line in lines:
        text = line.strip()
        if text and not _HEADER.match(text):
            yield _WIKI103_SPLIT.sub(r"\1", text)


def caption_paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Paragraphs of a captions file in HowTo100M's layout (`vlkd.data.captions`): each video's caption texts in
    time order, joined by spaces, the "HowTo100M captions" corpus of the paper's text-only pretraining (Table 2).

    Streamed, holding one video's captions at a time: HowTo100M's release stores its 136M captions in one file,
    video after video. A video whose lines are not contiguous gives a paragraph per run of consecutive lines
    (gathering them would mean holding the whole file). Lines `preprocess` would skip (not a caption record, an
    empty or negative segment, no text) are skipped here too, with one warning counting them.
    """
    skipped, first = 0, ""

    def usable() -> Iterator[Caption]:
        nonlocal skipped, first
        for number, parsed in read_captions(lines):
            if isinstance(parsed, Caption):
                yield parsed
            else:
                skipped += 1
                first = first or f"line {number}: {parsed}"

    for _, run in itertools.groupby(usable(), key=attrgetter("video_id")):
        yield " ".join(caption.text.strip() for caption in sorted(run, key=attrgetter("start", "end")))
    if skipped:
        log.warning("%d caption lines are no usable caption and were skipped; the first, %s", skipped, first)


Paragraphs = Callable[[Iterable[str]], Iterator[str]]
PARAGRAPHS: dict[str, Paragraphs] = {"lines": corpus_lines, "captions": caption_paragraphs}
"""How each `TextSpec.format` turns the lines of a corpus file into paragraphs."""


ALPHABET_SIZE = 1000
"""Characters a trained vocabulary keeps (the corpus's most frequent), as `tokenizers`' BERT WordPiece does"""


def train_tokenizer(
    lines: Callable[[], Iterable[str]], vocab_size: int, min_frequency: int, lowercase: bool
) -> BertTokenizerFast:
    """A BERT WordPiece tokenizer trained on the corpus `lines()` gives (streamed, so a Wikipedia dump need not fit
    in memory), the same one every time for the same corpus.

    The vocabulary has at most `vocab_size` tokens, fewer when the corpus has fewer distinct words and pieces
    seen `min_frequency` times. It always holds the special tokens and the corpus's alphabet (its ALPHABET_SIZE most
    frequent characters, and the "##" continuations of those that can follow another in a word), so a `vocab_size`
    below that is an error.

    `tokenizers` alone gives a different vocabulary on every run (huggingface/tokenizers#1794): it numbers the "##"
    continuations in hash-map order and breaks ties between equally frequent merges by those numbers, and picks the
    alphabet's last characters among equally frequent ones in that order too. So the corpus is read twice: first to
    count its characters, which fixes the alphabet (the most frequent first, ties by code point), then to learn the
    pieces with that alphabet and its continuations numbered up front.
    """
    from tokenizers import BertWordPieceTokenizer

    # Same normalizer and pre-tokenizer as transformers' BertTokenizerFast(do_lower_case=lowercase), so the
    # pieces are learnt on exactly the text they will later be applied to.
    wordpiece = BertWordPieceTokenizer(lowercase=lowercase)
    alphabet = _alphabet(lines(), wordpiece)
    if not alphabet:
        raise DataError("the corpus has no text to train a tokenizer on: check the corpus files are not empty")
    continuations = [f"##{c}" for c in alphabet if _continues_a_word(c, wordpiece)]
    wordpiece.train_from_iterator(
        lines(),
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *continuations],
        limit_alphabet=len(alphabet),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    vocab = wordpiece.get_vocab()
    if len(vocab) > vocab_size:
        raise DataError(
            f"tokenizer.vocab_size={vocab_size} cannot hold the special tokens and the corpus's alphabet "
            f"({len(vocab)} tokens): set tokenizer.vocab_size to at least {len(vocab)}"
        )
    return _bert_tokenizer(vocab, lowercase, "the trained vocabulary")


def _alphabet(lines: Iterable[str], wordpiece: BertWordPieceTokenizer) -> list[str]:
    """The corpus's ALPHABET_SIZE most frequent characters after normalisation, ties by code point. BERT's
    normaliser maps each character on its own (control characters out, accents stripped, lower case), so raw
    characters are counted (at C speed) and each distinct one normalised once."""
    raw: Counter[str] = Counter()
    for line in lines:
        raw.update(line)
    normalised: Counter[str] = Counter()
    for char, count in raw.items():
        for piece in wordpiece.normalize(char):
            if not piece.isspace():
                normalised[piece] += count
    return sorted(normalised, key=lambda c: (-normalised[c], c))[:ALPHABET_SIZE]


def _continues_a_word(char: str, wordpiece: BertWordPieceTokenizer) -> bool:
    """Whether `char` can follow another character in a word: BERT's pre-tokenizer splits punctuation and CJK
    characters off as words of their own, so those never get a "##" continuation."""
    return len(wordpiece.pre_tokenizer.pre_tokenize_str(wordpiece.normalize(f"a{char}"))) == 1


def load_vocab_tokenizer(vocab_file: Path, lowercase: bool) -> BertTokenizerFast:
    """A BERT tokenizer over a given vocab.txt (one token per line, id = line number; e.g. bert-base-uncased's),
    built offline."""
    tokens = Path(vocab_file).read_text(encoding="utf-8").splitlines()
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise DataError(f"{vocab_file}: {len(tokens) - len(vocab)} duplicate tokens: a vocab.txt lists each once")
    return _bert_tokenizer(vocab, lowercase, str(vocab_file))


def _bert_tokenizer(vocab: dict[str, int], lowercase: bool, source: str) -> BertTokenizerFast:
    from transformers import BertTokenizerFast

    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise DataError(f"{source} lacks BERT's special tokens {', '.join(missing)}: is it a BERT vocab.txt?")
    # transformers 5 builds BERT's normalizer, pre-tokenizer, [CLS] A [SEP] template and decoder from `vocab`
    # (its `vocab_file` argument is ignored when constructing directly).
    return BertTokenizerFast(vocab=vocab, do_lower_case=lowercase)


def save_tokenizer(tokenizer: BertTokenizerFast, out_dir: Path) -> None:
    """Save so that `BertTokenizerFast.from_pretrained(out_dir)` (or AutoTokenizer) loads it offline.

    A vocab.txt is written next to tokenizer.json so tools outside transformers, and a later spec's
    `tokenizer.vocab`, can use the vocabulary as it is.
    """
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    vocab = tokenizer.get_vocab()
    ordered = sorted(vocab, key=vocab.__getitem__)
    (out_dir / VOCAB).write_text("".join(f"{token}\n" for token in ordered), encoding="utf-8")


def load_rust_tokenizer(directory: Path) -> Tokenizer:
    """The Rust tokenizer of a `save_tokenizer` folder (its tokenizer.json), without padding or truncation."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(directory) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def tokenize_lines(tokenizer: Tokenizer, lines: list[str]) -> list[list[int]]:
    """Token ids of each line without special tokens (`pack_sequences` adds them), for Ray Data `map_batches`.

    Takes the Rust tokenizer (`load_rust_tokenizer`, or a transformers tokenizer's `backend_tokenizer`) and calls
    its batch encoder directly: no padding, masks or length warnings to build and drop, and a read task that
    tokenises need not import transformers.
    """
    encodings = tokenizer.encode_batch(list(lines), add_special_tokens=False)
    return [encoding.ids for encoding in encodings]


def pack_sequences(
    token_ids: Iterable[list[int]], max_len: int, cls_id: int, sep_id: int, pack: bool
) -> Iterator[list[int]]:
    """Sequences `[CLS] tokens [SEP]` of at most `max_len` tokens, in input order; inputs without tokens are
    skipped, so no sequence is empty.

    pack=False: one sequence per input, truncated (the paper truncates text past 128 tokens, Sec. 4.3).
    pack=True: consecutive inputs share a sequence while the next one still fits, and no token is lost: an
    input longer than `max_len - 2` is cut into full chunks, its remainder opening the next sequence. Tan and
    Bansal's code instead cuts the concatenated corpus into fixed blocks wherever a block ends.
    """
    if max_len < 3:
        raise ValueError(f"max_len={max_len} leaves no room between [CLS] and [SEP]: use at least 3 (128 in Sec. 4.3)")
    if pack:
        return _packed(token_ids, max_len - 2, cls_id, sep_id)
    return ([cls_id, *ids[: max_len - 2], sep_id] for ids in token_ids if len(ids) > 0)


def _packed(token_ids: Iterable[list[int]], body: int, cls_id: int, sep_id: int) -> Iterator[list[int]]:
    current: list[int] = []
    for ids in token_ids:
        if len(current) + len(ids) <= body:
            current.extend(ids)
            continue
        if current:
            yield [cls_id, *current, sep_id]
        start = 0
        while len(ids) - start > body:
            yield [cls_id, *ids[start : start + body], sep_id]
            start += body
        current = list(ids[start:])
    if current:
        yield [cls_id, *current, sep_id]


class _ShardWriter:
    """One split's sequences as Parquet shards of `shard_size` rows. The pending shard is kept as flat int32
    (4 bytes a token, not a Python int object each), so Wikipedia-sized shards stay small in memory."""

    def __init__(self, out_dir: Path, split: str, shard_size: int) -> None:
        self.out_dir = out_dir
        self.split = split
        self.shard_size = shard_size
        self.shards: list[dict[str, Any]] = []
        self._values = array("i")
        self._offsets = array("i", [0])

    def add(self, sequence: list[int]) -> None:
        self._values.extend(sequence)
        self._offsets.append(len(self._values))
        if len(self._offsets) > self.shard_size:
            self.flush()

    def flush(self) -> None:
        rows = len(self._offsets) - 1
        if rows == 0:
            return
        offsets = np.frombuffer(self._offsets, dtype=np.int32)
        values = np.frombuffer(self._values, dtype=np.int32)
        table = pa.table(
            {"input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)), "length": np.diff(offsets)},
            schema=SHARD_SCHEMA,
        )
        path = f"{self.split}/shard-{len(self.shards):05d}.parquet"
        (self.out_dir / self.split).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, self.out_dir / path, compression="zstd", row_group_size=GROUP_ROWS)
        self.shards.append({"path": path, "sequences": rows, "tokens": len(values)})
        self._values = array("i")
        self._offsets = array("i", [0])

    def summary(self) -> dict[str, Any]:
        self.flush()
        return {
            "sequences": sum(s["sequences"] for s in self.shards),
            "tokens": sum(s["tokens"] for s in self.shards),
            "shards": self.shards,
        }


def write_shards(
    sequences: Iterable[list[int]], out_dir: Path, shard_size: int, val_size: int, seed: int, max_len: int
) -> dict[str, Any]:
    """Write `sequences` as the `corpus` format (module docstring) in the empty folder `out_dir`, holding out
    `val_size` of them as validation; returns what index.json says. (The paper's 10K held out, Sec. 4.3, are
    HowTo100M clips; it names no held-out size for Wikipedia.)

    The held-out set is a uniform random sample chosen in one pass by reservoir sampling (Algorithm R) driven
    by `random.Random(seed)`: the same sequences and seed always give the same split, and memory holds only
    `val_size` sequences plus one pending shard, whatever the corpus size. The price: a training sequence that
    spent time in the reservoir is written when evicted, later than its corpus position, so train shards keep
    corpus order only approximately (training shuffles anyway). Validation keeps corpus order.
    """
    out_dir = Path(out_dir)
    if shard_size < 1 or val_size < 0 or max_len < 3:
        raise ValueError(f"need shard_size >= 1, val_size >= 0, max_len >= 3; got {shard_size}, {val_size}, {max_len}")
    if shard_size * max_len >= 2**31:
        raise ValueError(f"shard_size={shard_size} x max_len={max_len} tokens overflow a shard's int32 offsets")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty: write shards into a new folder, so no stale shard is mixed in")
    rng = random.Random(seed)
    train = _ShardWriter(out_dir, "train", shard_size)
    reservoir: list[tuple[int, list[int]]] = []
    count = 0
    for count, sequence in enumerate(sequences, start=1):
        if not 0 < len(sequence) <= max_len:
            raise ValueError(f"sequence {count - 1} has {len(sequence)} tokens: expected 1 to max_len={max_len}")
        if count <= val_size:
            reservoir.append((count, sequence))
            continue
        slot = rng.randrange(count)
        if slot < val_size:
            evicted = reservoir[slot][1]
            reservoir[slot] = (count, sequence)
            sequence = evicted
        train.add(sequence)
    if count <= val_size:
        raise DataError(_too_few(count, val_size))
    validation = _ShardWriter(out_dir, "validation", shard_size)
    for _, sequence in sorted(reservoir, key=lambda item: item[0]):
        validation.add(sequence)
    index = {
        "format": FORMAT,
        "max_len": max_len,
        "shard_size": shard_size,
        "row_group_size": GROUP_ROWS,
        "seed": seed,
        "splits": {"train": train.summary(), "validation": validation.summary()},
    }
    (out_dir / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return index


def _too_few(count: int, val_size: int) -> str:
    if count == 0:
        return "the corpus gave no sequences: check that its files hold text (headers and blank lines are dropped)"
    return (
        f"val_size={val_size} would hold out all {count} sequences of the corpus, leaving none to train on: "
        f"set val_size to at most {count - 1}"
    )


def read_index(directory: Path) -> dict[str, Any]:
    """The index.json of a corpus folder written by `write_shards`."""
    path = Path(directory) / INDEX
    if not path.is_file():
        raise NotFoundError(f"{path} not found: {directory} is not a token corpus (written by the text stage)")
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("format") != FORMAT:
        raise DataError(f"{path}: format {index.get('format')!r}, expected {FORMAT!r}: rerun the text stage")
    return index


def read_shards(directory: Path, split: str) -> Iterator[list[int]]:
    """The sequences of one split, in the order they were written, shard by shard as index.json lists them."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")
    shards = [Path(directory) / shard["path"] for shard in read_index(directory)["splits"][split]["shards"]]
    return _read_rows(shards)


def _read_rows(paths: list[Path]) -> Iterator[list[int]]:
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(columns=["input_ids"]):
            yield from batch.column("input_ids").to_pylist()
