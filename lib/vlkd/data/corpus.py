"""Reading a `corpus` artifact for training: token sequences as Ray Data datasets, straight from the store."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from vlkd.artifacts import ArtifactStore
from vlkd.data.ingest import passes_for, shard_dataset
from vlkd.data.text import FORMAT, INDEX
from vlkd.errors import DataError
from vlkd.inputs import InputSource, open_input
from vlkd.refs import ArtifactRef
from vlkd.specs import Resources

READ_ROWS = 1024


@dataclass(frozen=True)
class CorpusInfo:
    ref: ArtifactRef
    max_len: int
    train_sequences: int
    shards: dict[str, tuple[str, ...]]
    """split -> shard paths"""


def corpus_info(source: InputSource) -> CorpusInfo:
    index = json.loads(source.read_bytes(INDEX))
    if index.get("format") != FORMAT:
        raise DataError(f"{source.uri} is not a corpus artifact of format {FORMAT}: rerun the text stage")
    splits = index["splits"]
    shards = {name: tuple(s["path"] for s in split["shards"]) for name, split in splits.items()}
    return CorpusInfo(source.ref, index["max_len"], splits["train"]["sequences"], shards)


def _shard_sequences(path: str, source: InputSource) -> Iterator[pa.Table]:
    """Ray Data task: one shard's sequences as Arrow tables, a row group's batch at a time."""
    import pyarrow.parquet as pq

    shard = pq.ParquetFile(io.BytesIO(source.read_bytes(path)))
    for batch in shard.iter_batches(batch_size=READ_ROWS, columns=["input_ids"]):
        yield pa.Table.from_batches([batch])


def corpus_datasets(
    store: ArtifactStore, ref: ArtifactRef | str, resources: Resources, batch_size: int
) -> tuple[dict[str, Any], CorpusInfo]:
    """Ray Data datasets {"train", "validation"} of Arrow rows {input_ids list<int32>}, in shard order; a pass over
    "train" reads its sequences `passes_for` its size and `batch_size` times."""
    source = open_input(str(ref), store)
    info = corpus_info(source)
    read = partial(_shard_sequences, source=source)
    passes = passes_for(info.train_sequences, batch_size, resources)
    datasets = {
        split: shard_dataset(paths, read, resources, passes if split == "train" else 1)
        for split, paths in info.shards.items()
    }
    return datasets, info


def pad_sequences(column: pa.ChunkedArray | pa.Array, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """A list<int> column of token sequences -> padded ids [B, L] int64 and attention mask [B, L] int64, straight
    from the column's values and offsets."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = column.flatten().to_numpy()
    offsets = column.offsets.to_numpy()
    lengths = np.diff(offsets)
    ids = np.full((len(lengths), int(lengths.max(initial=1))), pad_id, np.int64)
    mask = np.zeros(ids.shape, np.int64)
    for i, (start, length) in enumerate(zip(offsets[:-1] - offsets[0], lengths, strict=True)):
        ids[i, :length] = values[start : start + length]
        mask[i, :length] = 1
    return ids, mask
