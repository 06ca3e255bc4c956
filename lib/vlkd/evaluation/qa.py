"""Extractive question answering (SQuAD v1.1 / v2.0) as BERT's run_squad.py does it.

Pre-processing: `[CLS] question [SEP] passage [SEP]`; a passage longer than the window is cut into overlapping
windows (the document stride), each a feature. A window's label is the answer's first and last token, or [CLS]
(position 0) when the question has no answer (v2.0) or the answer is not wholly inside the window.
Post-processing: per question, over all its windows, the best span (start logit + end logit) among the
`N_BEST` highest start and end positions inside the passage, ending after it starts and at most
`MAX_ANSWER_TOKENS` long, mapped back to the passage's own characters through the tokenizer's offsets. For
v2.0 the answer is empty when the null score ([CLS] start + end, the lowest over the windows) beats that span.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlkd.errors import VlkdError
from vlkd.evaluation.batches import Feature, predict_batches
from vlkd.evaluation.readers import Question
from vlkd.evaluation.tasks import Task

if TYPE_CHECKING:
    from torch import nn
    from transformers import BatchEncoding, PreTrainedTokenizerBase

N_BEST = 20  # run_squad.py's n_best_size
MAX_ANSWER_TOKENS = 30  # run_squad.py's max_answer_length
MIN_MAX_LEN = 32
_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def build_model(model_dir: Path, task: Task) -> tuple[nn.Module, dict[str, Any]]:
    from transformers import BertForQuestionAnswering

    return BertForQuestionAnswering.from_pretrained(model_dir, output_loading_info=True)


def window_limits(max_len: int) -> tuple[int, int]:
    """(most question tokens kept, tokens shared by consecutive windows) for `max_len`-token inputs.

    A third each. The overlap keeps the ratio of run_qa.py's defaults (doc_stride 128 of max_seq_length 384);
    run_squad.py caps questions at 64 of 384 tokens, but at the paper's 128 a sixth would cut real questions, so
    a third. Either way every window has more passage tokens than the overlap, which the tokenizer requires.
    """
    if max_len < MIN_MAX_LEN:
        raise VlkdError(
            f"finetune.max_len={max_len} leaves too little room for question and passage in extractive QA: "
            f"use at least {MIN_MAX_LEN} (the paper uses 128)"
        )
    return max_len // 3, max_len // 3


def _clip_questions(tokenizer: PreTrainedTokenizerBase, questions: list[Question], most: int) -> list[str]:
    """Questions cut after their `most`-th token, at a character boundary (run_squad.py's max_query_length)."""
    encoded = tokenizer([q.question for q in questions], add_special_tokens=False, return_offsets_mapping=True)
    return [
        q.question if len(offsets) <= most else q.question[: offsets[most - 1][1]]
        for q, offsets in zip(questions, encoded["offset_mapping"], strict=True)
    ]


def encode_windows(tokenizer: PreTrainedTokenizerBase, questions: list[Question], max_len: int) -> BatchEncoding:
    """The windows of every question; `overflow_to_sample_mapping` gives each window's question."""
    most_question, overlap = window_limits(max_len)
    return tokenizer(
        _clip_questions(tokenizer, questions, most_question),
        [q.context for q in questions],
        truncation="only_second",
        max_length=max_len,
        stride=overlap,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def answer_position(
    sequence_ids: list[int | None], offsets: list[tuple[int, int]], question: Question
) -> tuple[int, int]:
    """(start, end) token of the question's first answer in this window; (0, 0), i.e. [CLS], when there is
    none or it does not fit in the window."""
    if not question.answers:
        return 0, 0
    text, start_char = question.answers[0]
    end_char = start_char + len(text)
    passage = [k for k, sequence in enumerate(sequence_ids) if sequence == 1]
    first, last = passage[0], passage[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def encode(
    tokenizer: PreTrainedTokenizerBase, questions: list[Question], task: Task, max_len: int, labels: bool = True
) -> list[Feature]:
    """One feature per window; with `labels`, `start_positions` and `end_positions`."""
    windows = encode_windows(tokenizer, questions, max_len)
    features = []
    for i, question_index in enumerate(windows["overflow_to_sample_mapping"]):
        feature = {key: windows[key][i] for key in _INPUTS}
        if labels:
            start, end = answer_position(
                windows.sequence_ids(i), windows["offset_mapping"][i], questions[question_index]
            )
            feature |= {"start_positions": start, "end_positions": end}
        features.append(feature)
    return features


def best_span(
    start_logits: list[float], end_logits: list[float], sequence_ids: list[int | None]
) -> tuple[float, int, int] | None:
    """(score, start token, end token) of the best valid passage span of one window; None if there is none."""
    passage = [k for k, sequence in enumerate(sequence_ids) if sequence == 1]
    starts = sorted(passage, key=lambda k: start_logits[k], reverse=True)[:N_BEST]
    ends = sorted(passage, key=lambda k: end_logits[k], reverse=True)[:N_BEST]
    spans = [(start_logits[s] + end_logits[e], s, e) for s in starts for e in ends if s <= e < s + MAX_ANSWER_TOKENS]
    return max(spans, default=None)


def predict(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[Question],
    task: Task,
    max_len: int,
    batch_size: int,
    device: str,
) -> list[str]:
    """Each question's answer text, a slice of its passage ("" for no answer)."""
    windows = encode_windows(tokenizer, questions, max_len)
    features = [{key: windows[key][i] for key in _INPUTS} for i in range(len(windows["input_ids"]))]
    start_logits: list[list[float]] = []
    end_logits: list[list[float]] = []
    for output in predict_batches(model, features, batch_size, device, tokenizer.pad_token_id):
        start_logits += output.start_logits.float().cpu().tolist()
        end_logits += output.end_logits.float().cpu().tolist()
    by_question: dict[int, list[int]] = defaultdict(list)
    for window, question_index in enumerate(windows["overflow_to_sample_mapping"]):
        by_question[question_index].append(window)
    return [
        pick_answer(questions[q], by_question[q], windows, start_logits, end_logits, task.unanswerable)
        for q in range(len(questions))
    ]


def pick_answer(
    question: Question,
    window_ids: list[int],
    windows: BatchEncoding,
    start_logits: list[list[float]],
    end_logits: list[list[float]],
    unanswerable: bool,
) -> str:
    """The question's answer from its windows' logits: the best span's passage text, or "" when `unanswerable`
    is allowed and the lowest null score beats it (run_squad.py, null_score_diff_threshold 0)."""
    best_score, text, null_score = -math.inf, "", math.inf
    for w in window_ids:
        null_score = min(null_score, start_logits[w][0] + end_logits[w][0])
        span = best_span(start_logits[w], end_logits[w], windows.sequence_ids(w))
        if span is not None and span[0] > best_score:
            offsets = windows["offset_mapping"][w]
            best_score, text = span[0], question.context[offsets[span[1]][0] : offsets[span[2]][1]]
    return "" if unanswerable and null_score > best_score else text
