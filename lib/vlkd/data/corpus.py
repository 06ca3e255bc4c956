"""Reading a `corpus` artifact for training: token sequences as Ray Data datasets, straight from the store, a few row
groups at a time (`vlkd.data.ingest.SplitReader`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa

from vlkd.artifacts import ArtifactStore
from vlkd.data.buckets import TOKENS, padded_length
from vlkd.data.ingest import SplitReader, passes_for
from vlkd.data.row_groups import read_row_groups, shard_files
from vlkd.data.text import FORMAT, INDEX
from vlkd.errors import DataError
from vlkd.inputs import InputFile, InputSource, open_input
from vlkd.refs import ArtifactRef
from vlkd.specs import Resources


@dataclass(frozen=True)
class CorpusInfo:
    ref: ArtifactRef
    max_len: int
    train_sequences: int
    shards: dict[str, tuple[str, ...]]
    """split -> shard paths"""
    sequences: dict[str, tuple[int, ...]]
    """split -> sequences in each shard"""
    group_rows: int
    """sequences per Parquet row group"""


PYARROW_GROUP_ROWS = 1 << 20
"""rows of a row group `pq.write_table` writes when not told"""


def corpus_info(source: InputSource) -> CorpusInfo:
    index = json.loads(source.read_bytes(INDEX))
    if index.get("format") != FORMAT:
        raise DataError(f"{source.uri} is not a corpus artifact of format {FORMAT}: rerun the text stage")
    splits = index["splits"]
    shards = {name: tuple(s["path"] for s in split["shards"]) for name, split in splits.items()}
    sequences = {name: tuple(s["sequences"] for s in split["shards"]) for name, split in splits.items()}
    # Corpora written before row groups were recorded hold a shard in one row group (pyarrow's default cap).
    group_rows = index.get("row_group_size") or min(index["shard_size"], PYARROW_GROUP_ROWS)
    return CorpusInfo(source.ref, index["max_len"], splits["train"]["sequences"], shards, sequences, group_rows)


def _sequence_groups(shard: InputFile, groups: list[int], source: InputSource) -> list[pa.Table]:
    """Ray Data task: row groups of a shard's sequences as Arrow tables."""
    return read_row_groups(source, shard, groups, ["input_ids"])


def corpus_datasets(
    store: ArtifactStore, ref: ArtifactRef | str, resources: Resources, batch_size: int, window: int, seed: int
) -> tuple[dict[str, SplitReader], CorpusInfo]:
    """The splits {"train", "validation"} of a corpus, read as rows {input_ids list<int32>} in the order
    `vlkd.data.order` draws (`window` rows mixed at once, a new seeded order every pass); a pass over "train" reads
    its sequences `passes_for` its size and `batch_size` times."""
    source = open_input(str(ref), store)
    info = corpus_info(source)
    read = partial(_sequence_groups, source=source.unlisted())
    passes = passes_for(info.train_sequences, batch_size, resources)
    datasets = {
        split: SplitReader(
            shard_files(source, paths),
            tuple(-(-n // info.group_rows) for n in info.sequences[split]),
            info.group_rows,
            sum(info.sequences[split]),
            read,
            resources,
            window,
            seed,
            passes if split == "train" else 1,
        )
        for split, paths in info.shards.items()
    }
    return datasets, info


def pad_sequences(column: pa.ChunkedArray | pa.Array, pad_id: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """A list<int> column of token sequences -> padded ids [B, L] int64 and attention mask [B, L] int64, straight
    from the column's values and offsets in one assignment. L is the longest sequence rounded up to a multiple of
    `buckets.TOKENS`, at most `max_len` (a compiled step sees few lengths: `vlkd.data.buckets`)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy()[offsets[0] : offsets[-1]]
    lengths = np.diff(offsets)
    longest = int(lengths.max(initial=1))
    mask = np.arange(max(longest, padded_length(longest, max_len, TOKENS))) < lengths[:, None]
    ids = np.full(mask.shape, pad_id, np.int64)
    ids[mask] = values  # row by row, each sequence's tokens first: the order of the column's values
    return ids, mask.astype(np.int64)
