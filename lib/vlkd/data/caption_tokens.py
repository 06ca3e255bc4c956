"""Captions tokenised where Ray Data reads them (`vlkd.data.ingest.RowsPreparer`), by an object that needs neither
torch nor transformers: Ray Data's read tasks run in worker processes of their own, and what they unpickle they
import. Tokenising with the teacher's own task there made every read worker import torch and transformers to
tokenise text: 2 CPU-seconds and 195 MB more apiece (`bench.read_worker`)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa


class CaptionTokens:
    """`text` -> `input_ids` (list<int32>, [CLS] ... [SEP], truncated to `max_length`): what the tokenizer's own
    `tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]` gives, from its Rust tokenizer (the
    `tokenizers` package) alone."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        from tokenizers import Tokenizer

        # A copy: truncation is a setting of the Rust tokenizer, which the transformers tokenizer resets per call.
        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_padding()
        self.backend.enable_truncation(max_length, strategy="longest_first", direction=tokenizer.truncation_side)

    def __call__(self, rows: pa.Table) -> pa.Table:
        encoded = self.backend.encode_batch(rows.column("text").to_pylist(), add_special_tokens=True)
        ids = pa.array([e.ids for e in encoded], pa.list_(pa.int32()))
        return rows.drop_columns(["text"]).append_column("input_ids", ids)
