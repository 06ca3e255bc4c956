"""Reading a `corpus` artifact for training: token sequences as Ray Data datasets, straight from the store."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from vlkd.artifacts import ArtifactStore
from vlkd.data.text import FORMAT, INDEX
from vlkd.errors import DataError
from vlkd.inputs import InputSource, open_input
from vlkd.refs import ArtifactRef


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


def _shard_rows(row: dict[str, Any], source: InputSource) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(source.read_bytes(row["path"])), columns=["input_ids"])
    return [{"input_ids": np.asarray(ids, np.int64)} for ids in table.column("input_ids").to_pylist()]


def corpus_datasets(store: ArtifactStore, ref: ArtifactRef | str) -> tuple[dict[str, Any], CorpusInfo]:
    """Ray Data datasets {"train", "validation"} of rows {input_ids [L] int64}, in shard order."""
    import ray

    ray.data.DataContext.get_current().execution_options.preserve_order = True  # seeded runs repeat exactly
    source = open_input(str(ref), store)
    info = corpus_info(source)
    read = partial(_shard_rows, source=source)
    datasets = {
        split: ray.data.from_items([{"path": p} for p in paths]).flat_map(read) for split, paths in info.shards.items()
    }
    return datasets, info


def pad_sequences(sequences: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length token ids -> padded [B, L] int64 and attention mask [B, L] int64."""
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), pad_id, np.int64)
    mask = np.zeros((len(sequences), longest), np.int64)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask
