"""Reading chosen row groups of a Parquet file in the store, fetching only their bytes and the file's footer.

Training draws each window of rows from row groups all over its split (`vlkd.data.order`), a few from each shard.
Reading whole shards for them would fetch every shard once per row group it holds: eight times the bytes for a
features shard of 256 clips. A part of a file cannot be checked against the file's sha256, so the reader checks what
Parquet itself can: the footer's magic and the row groups it lists.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlkd.errors import DataError
from vlkd.inputs import InputFile, InputSource

FOOTER_GUESS = 64 << 10
"""bytes fetched from a file's end to find its footer in one request (a shard's footer is a few KB)"""


class RangeFile(io.RawIOBase):
    """A read-only file over ranges of a stored object: ranges fetched up front (`prefetch`) serve the reads inside
    them; any other read fetches its own range."""

    def __init__(self, size: int, fetch: Callable[[int, int], bytes]) -> None:
        self._size = size
        self._fetch = fetch
        self._pos = 0
        self._ranges: list[tuple[int, memoryview]] = []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence] + offset
        return self._pos

    def prefetch(self, start: int, end: int) -> None:
        self._ranges.append((start, memoryview(self._fetch(start, end))))

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        start, end = self._pos, min(self._pos + len(buffer), self._size)
        data = self._read(start, end) if end > start else b""
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _read(self, start: int, end: int) -> bytes | memoryview:
        for at, data in self._ranges:
            if at <= start and end <= at + len(data):
                return data[start - at : end - at]  # a view: the bytes are copied once, into Parquet's buffer
        return self._fetch(start, end)


def _span(metadata: pq.FileMetaData, group: int) -> tuple[int, int]:
    """Bytes [start, end) of a row group's column chunks."""
    chunks = [metadata.row_group(group).column(c) for c in range(metadata.num_columns)]
    starts = [c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset for c in chunks]
    ends = [start + c.total_compressed_size for start, c in zip(starts, chunks, strict=True)]
    return min(starts), max(ends)


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans joined where they touch or overlap: adjacent row groups come in one request."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


class ShardTable(Sequence[InputFile]):
    """Shards by path and size, as listed, in one bytes object and two arrays instead of an object each. A split
    names every shard of its artifact and reaches every training worker pickled: HowTo100M's 530k shards held about
    300 MB there as `InputFile`s and took 0.9 s to unpickle; as a table, 54 MB and 0.02 s (`bench.read_task`)."""

    def __init__(self, files: Iterable[InputFile]) -> None:
        paths, sizes = [], []
        for file in files:
            paths.append(file.path.encode())
            sizes.append(file.size)
        self._paths = b"".join(paths)
        self._ends = np.cumsum([len(path) for path in paths], dtype=np.int64)
        self._sizes = np.array(sizes, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._sizes)

    def paths_and_sizes(self, indices: np.ndarray) -> tuple[list[str], list[int]]:
        """The paths and sizes of the shards at `indices`: what a window names (no `InputFile` made for each)."""
        starts = np.where(indices > 0, self._ends[np.maximum(indices - 1, 0)], 0).tolist()
        paths = [
            self._paths[start:end].decode() for start, end in zip(starts, self._ends[indices].tolist(), strict=True)
        ]
        return paths, self._sizes[indices].tolist()

    def __getitem__(self, index: int) -> InputFile:  # type: ignore[override]  # no slices: nothing takes one
        index = range(len(self))[index]  # a negative index counts from the end; past the end is an IndexError
        start = int(self._ends[index - 1]) if index else 0
        return InputFile(self._paths[start : int(self._ends[index])].decode(), int(self._sizes[index]))


def shard_files(source: InputSource, paths: Iterable[str]) -> ShardTable:
    """Parquet shards as `read_row_groups` takes them: path and size, as listed. Not their sha256, which a read of
    some row groups cannot check, and which a split of 530k shards would carry to every training worker (60 MB)."""
    return ShardTable(InputFile(path, source.size(path)) for path in paths)


def read_row_groups(source: InputSource, shard: InputFile, groups: Sequence[int], columns: list[str]) -> list[pa.Table]:
    """`columns` of the row groups `groups` of the Parquet file `shard` (its size as listed: no request asks for
    it), a table each, in the order asked: one request for the footer, one per run of adjacent groups."""
    path, size = shard.path, shard.size
    file = RangeFile(size, lambda start, end: source.read_range(path, start, end))
    file.prefetch(max(0, size - FOOTER_GUESS), size)  # a larger footer is fetched when Parquet reads past it
    try:
        parquet = pq.ParquetFile(file)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{source.uri}/{path} is not a readable Parquet file ({exc}): re-publish it") from None
    metadata = parquet.metadata
    missing = {g for g in groups if not 0 <= g < metadata.num_row_groups}
    if missing:
        raise DataError(
            f"{source.uri}/{path} has {metadata.num_row_groups} row groups, not the {max(missing) + 1} its index "
            "promises: the artifact is damaged; re-publish it"
        )
    for start, end in _merged(_span(metadata, g) for g in set(groups)):
        file.prefetch(start, end)
    return [parquet.read_row_group(g, columns=columns) for g in groups]
