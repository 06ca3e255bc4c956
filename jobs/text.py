"""Stage `text`: a plain-text corpus, or the captions of a videos folder (`format: captions`, Table 2) -> a
`tokenizer` artifact and a `corpus` artifact of token shards (Sec. 4.1, 4.3), with Ray Data tokenising the input
files in parallel.

Parallelism is per input file (a Wikipedia dump comes as many files; split a single huge file to use more
workers: a captions corpus is one file, so one task). Rows come back in corpus order, so packing consecutive
sentences stays deterministic.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vlkd.artifacts import ArtifactStore, Manifest, collect_files
from vlkd.data import text as textdata
from vlkd.data.ingest import ShardReader, configure_ray_data, shard_dataset
from vlkd.errors import DataError, NotFoundError, VlkdError
from vlkd.inputs import InputFile, InputSource, fetch_weights, open_input
from vlkd.refs import ArtifactRef
from vlkd.runtime import JobContext, job_main
from vlkd.specs import Resources, TextSpec, TokenizerSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger("vlkd.text")
TOKENIZE_LINES = 4096


def corpus_files(source: InputSource, corpus_format: str, captions: str) -> list[InputFile]:
    """The files to read: every file of a plain-text corpus, or only the captions file of a videos folder (found
    without listing the folder, which for HowTo100M holds 1.2M videos)."""
    if corpus_format == "captions":
        try:
            return [source.file(captions)]
        except NotFoundError:
            raise DataError(
                f"{source.uri}/{captions} not found: format: captions reads the captions file (JSON Lines of "
                f"video_id, start, end, text) of a videos folder; set `captions:` to its name in {source.uri}, or "
                "use format: lines for a plain-text corpus"
            ) from None
    files = sorted((f for f in source.files() if not Path(f.path).name.startswith(".")), key=lambda f: f.path)
    if not files:
        raise VlkdError(f"the corpus {source.uri} holds no files")
    return files


def _file_paragraphs(source: InputSource, file: InputFile, corpus_format: str) -> Iterator[str]:
    """The corpus paragraphs of one file (`textdata.PARAGRAPHS`), streamed from a local copy (checked against the
    file's sha256 where known): a Wikipedia dump or HowTo100M's captions need not fit in memory."""
    with tempfile.TemporaryDirectory(prefix="vlkd-text-") as tmp:
        local = source.local_path(file.path) or source.fetch(file.path, Path(tmp) / "part", file.sha256)
        with open(local, encoding="utf-8", errors="replace") as lines:
            yield from textdata.PARAGRAPHS[corpus_format](lines)


def build_tokenizer(
    spec: TokenizerSpec,
    source: InputSource,
    files: list[InputFile],
    corpus_format: str,
    store: ArtifactStore,
    scratch: Path,
) -> tuple[Any, ArtifactRef | None]:
    """The tokenizer and the artifact it came from (None when trained on this corpus)."""
    if spec.artifact is not None:
        manifest = store.fetch(spec.artifact, scratch / "tokenizer-in")
        from transformers import BertTokenizerFast

        return BertTokenizerFast.from_pretrained(scratch / "tokenizer-in"), manifest.ref
    if spec.vocab is not None:
        vocab, parent = fetch_weights(spec.vocab, store, scratch / "vocab")
        return textdata.load_vocab_tokenizer(Path(vocab), spec.lowercase), parent

    def lines() -> Iterator[str]:  # read twice (see train_tokenizer), a file at a time
        return (line for file in files for line in _file_paragraphs(source, file, corpus_format))

    return textdata.train_tokenizer(lines, spec.vocab_size, spec.min_frequency, spec.lowercase), None


def tokenize_file(file: InputFile, source: InputSource, corpus_format: str, tokenizer_dir: str) -> Iterator[pa.Table]:
    """Ray Data task: one input file -> a row of token ids per paragraph, tokenised `TOKENIZE_LINES` at a time."""
    tokenizer = _cached_tokenizer(tokenizer_dir)
    lines = _file_paragraphs(source, file, corpus_format)
    while chunk := list(itertools.islice(lines, TOKENIZE_LINES)):
        yield pa.table({"input_ids": pa.array(textdata.tokenize_lines(tokenizer, chunk), pa.list_(pa.int32()))})


_TOKENIZERS: dict[str, Tokenizer] = {}


def _cached_tokenizer(directory: str) -> Tokenizer:
    # Ray reuses worker processes: load the tokenizer once per worker, not once per file.
    if directory not in _TOKENIZERS:
        _TOKENIZERS[directory] = textdata.load_rust_tokenizer(Path(directory))
    return _TOKENIZERS[directory]


def tokenizing_task(source: InputSource, corpus_format: str, tokenizer_dir: Path) -> ShardReader:
    """What each Ray Data task runs: the source without its artifact's listing (`InputSource.unlisted`; each row
    names its file and sha256), so no task's function grows with the corpus's files."""
    unlisted = source.unlisted()
    return partial(tokenize_file, source=unlisted, corpus_format=corpus_format, tokenizer_dir=str(tokenizer_dir))


def tokenized_paragraphs(
    source: InputSource, files: list[InputFile], corpus_format: str, tokenizer_dir: Path, resources: Resources
) -> Iterator[list[int]]:
    dataset = shard_dataset(files, tokenizing_task(source, corpus_format, tokenizer_dir), resources)
    for row in dataset.iter_rows():
        yield [int(t) for t in row["input_ids"]]


def run(spec: TextSpec, context: JobContext) -> list[Manifest]:
    started = time.monotonic()
    store = context.store
    source = open_input(spec.corpus, store)
    files = corpus_files(source, spec.format, spec.captions)
    work = Path(tempfile.mkdtemp(prefix="text-", dir=context.scratch))
    tokenizer, tokenizer_parent = build_tokenizer(spec.tokenizer, source, files, spec.format, store, work)
    tokenizer_dir = work / "tokenizer"
    textdata.save_tokenizer(tokenizer, tokenizer_dir)
    inputs = [p for p in (source.ref, tokenizer_parent) if p is not None]
    tokenizer_manifest = store.publish(
        "tokenizer",
        spec.name,
        collect_files([tokenizer_dir]),
        spec=spec,
        parents=inputs,
        metrics={"vocab_size": len(tokenizer)},
        attributes={"source": source.uri, "trained": tokenizer_parent is None},
        job_id=context.job_id,
        cost=context.cost(),
    )
    context.start_ray(extra_cpus=spec.driver_cpus)
    configure_ray_data(spec.resources)
    paragraphs = tokenized_paragraphs(source, files, spec.format, tokenizer_dir, spec.resources)
    sequences = textdata.pack_sequences(
        paragraphs, spec.max_len, tokenizer.cls_token_id, tokenizer.sep_token_id, spec.pack
    )
    shards_dir = work / "corpus"
    index = textdata.write_shards(sequences, shards_dir, spec.shard_size, spec.val_size, spec.seed, spec.max_len)
    seconds = time.monotonic() - started
    splits = index["splits"]
    metrics = {
        "files": len(files),
        "sequences": sum(s["sequences"] for s in splits.values()),
        "tokens": sum(s["tokens"] for s in splits.values()),
        "train_sequences": splits["train"]["sequences"],
        "validation_sequences": splits["validation"]["sequences"],
        "vocab_size": len(tokenizer),
        "seconds": round(seconds, 2),
    }
    corpus_manifest = store.publish(
        "corpus",
        spec.name,
        collect_files([shards_dir]),
        spec=spec,
        parents=[*([source.ref] if source.ref else []), tokenizer_manifest.ref],
        metrics=metrics,
        attributes={"source": source.uri, "max_len": spec.max_len, "pack": spec.pack},
        job_id=context.job_id,
        cost=context.cost(),
    )
    log.info("%s: %d sequences, %d tokens", corpus_manifest.ref, metrics["sequences"], metrics["tokens"])
    return [tokenizer_manifest, corpus_manifest]


if __name__ == "__main__":
    job_main("text")
