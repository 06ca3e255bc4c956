"""Captions packed several to a row for LM^T (`vlkd.data.packing`, `vlkd.models.bert.packed_states`): the layout
holds every token once, the encoder gives each caption the states it gets alone, and the teacher's losses and
gradients are the padded batch's, over a fraction of its positions (issue 34, part 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_caption_rows import FEATURE_DIM, rows_of

from vlkd.data import text as textdata
from vlkd.data.buckets import ROWS
from vlkd.data.packing import pack
from vlkd.data.synth_asr import howto_captions
from vlkd.jobs.teacher import PACKING, TeacherTask
from vlkd.models.bert import bert_config, packed_states, stacked_packing, token_states
from vlkd.specs import ModelShape, parse_spec


@pytest.fixture(scope="module")
def captions() -> list[str]:
    """HowTo100M-shaped ASR captions: about 111 clips a video, in video order, a few long narrations among them."""
    asr = [c.text for c in howto_captions(seed=5, videos=2, clips_per_video=111)]
    return asr[:60] + [" ".join(asr[i : i + 5]) for i in range(60, 80, 5)] + asr[80:]


@pytest.fixture(scope="module")
def tokenizer(captions):
    return textdata.train_tokenizer(lambda: captions, 400, 1, True)


def task(tokenizer, packed: bool = True, **overrides) -> TeacherTask:
    spec = {"stage": "teacher", "name": "t", "features": "features/f", "tokenizer": "tokenizer/t", "model": "tiny"}
    spec = parse_spec({**spec, "max_text_len": 64, "mlm_probability": 0.3, **overrides})
    return TeacherTask(spec, tokenizer, FEATURE_DIM, packed=packed)


def collated(task: TeacherTask, texts: list[str]) -> dict:
    return task.collate(task.prepare_rows(rows_of(texts)))


def caption_lengths(tokenizer, captions: list[str]) -> np.ndarray:
    return np.array([len(ids) for ids in tokenizer(captions, truncation=True, max_length=64)["input_ids"]])


@pytest.mark.parametrize("size", [1, 7, 32, 128])
def test_the_layout_holds_every_token_once_and_finds_it_again(tokenizer, captions, size):
    lengths = caption_lengths(tokenizer, captions)[np.random.default_rng(size).permutation(len(captions))[:size]]
    length = int(np.ceil(lengths.max() / 16) * 16)
    layout = pack(lengths, length)
    rows = layout.gather.shape[0]
    real = layout.segments >= 0
    valid = np.arange(length) < lengths[:, None]
    flat = np.arange(size * length).reshape(size, length)
    assert sorted(layout.gather[real]) == sorted(flat[valid])  # every token once, no padding
    assert (layout.gather[~real] == size * length).all()
    assert (layout.scatter[valid] == np.flatnonzero(real.reshape(-1))[np.argsort(layout.gather[real])]).all()
    assert (layout.scatter[~valid] == rows * length).all()
    assert (layout.gather.reshape(-1)[layout.scatter[valid]] == flat[valid]).all()  # scatter undoes gather
    assert (layout.segments[real] == layout.gather[real] // length).all()
    assert (layout.positions[real] == layout.gather[real] % length).all()
    # A sequence's tokens sit together in one row, in order.
    for b in range(size):
        places = layout.scatter[b, : lengths[b]]
        assert len(set(places // length)) == 1 and (np.diff(places) == 1).all()
    fewest = -(-lengths.sum() // length)
    assert rows <= size and (rows % ROWS == 0 or rows == size) and rows < fewest + 2 * ROWS


def test_asr_captions_pack_into_a_fraction_of_the_padded_positions(tokenizer, captions):
    lengths = caption_lengths(tokenizer, captions)[:128]
    length = int(np.ceil(lengths.max() / 16) * 16)
    layout = pack(lengths, length)
    padded, packed = 128 * length, layout.gather.size
    assert lengths.sum() / padded < 0.5  # HowTo100M-shaped: mostly padding when padded
    assert packed < 0.6 * padded and lengths.sum() / packed > 0.75


def test_a_sequence_longer_than_the_rows_is_refused():
    with pytest.raises(ValueError, match="a sequence of 20 tokens does not fit a row of 16"):
        pack(np.array([3, 20]), 16)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_give_each_sequence_the_states_it_gets_alone(tokenizer, captions, attention):
    from transformers import BertForMaskedLM

    config = bert_config(ModelShape(preset="tiny"), len(tokenizer), attn_implementation=attention)
    model = BertForMaskedLM(config).eval()
    batch = collated(task(tokenizer), captions[40:80])  # with the long narrations: rows of 64 tokens
    packing = tuple(batch[PACKING + name] for name in ("gather", "scatter", "positions", "segments"))
    ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    assert packing[0].shape[0] < len(ids) / 2
    with torch.no_grad():
        packed = packed_states(model, ids, packing)
        padded = token_states(model, ids, attention_mask)
    valid = attention_mask.bool()
    torch.testing.assert_close(packed[valid], padded[valid], rtol=1e-4, atol=1e-5)
    assert (packed[~valid] == 0).all()
    with torch.no_grad():  # two batches stacked, as the text and its masked form are read in one pass
        both = packed_states(model, torch.cat([ids, ids.flip(1)]), stacked_packing(packing, 2))
        flipped = packed_states(model, ids.flip(1), packing)
    torch.testing.assert_close(both, torch.cat([packed, flipped]))


def step(task: TeacherTask, model: torch.nn.Module, batch: dict) -> tuple[dict, dict]:
    model.zero_grad(set_to_none=True)
    loss, terms = task.loss(model, batch, torch.Generator().manual_seed(0))
    loss.backward()
    module = getattr(model, "_orig_mod", model)
    return terms, {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "overrides",
    [{}, {"contrastive_text": "masked"}, {"objectives": ["ct"]}, {"objectives": ["mlm"]}],
    ids=["ct+mlm", "ct+mlm-one-text", "ct", "mlm"],
)
def test_the_teacher_step_packed_gives_the_padded_losses_and_gradients(tokenizer, captions, overrides):
    packed, padded = task(tokenizer, **overrides), task(tokenizer, packed=False, **overrides)
    texts = captions[:48]
    batch, plain = collated(packed, texts), collated(padded, texts)
    assert PACKING + "gather" in batch and PACKING + "gather" not in plain
    model = packed.build_model().eval()  # no dropout: both forms see the same network
    packed_terms, packed_grads = step(packed, model, batch)
    padded_terms, padded_grads = step(padded, model, plain)
    for name, value in padded_terms.items():
        torch.testing.assert_close(packed_terms[name], value, rtol=1e-4, atol=1e-6, msg=name)
    assert packed_grads.keys() == padded_grads.keys()
    for name, gradient in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], gradient, rtol=1e-3, atol=1e-5, msg=name)
    assert packed.flops(batch) < 0.75 * padded.flops(plain)


@pytest.mark.timeout(300)
def test_the_packed_step_compiles_to_one_graph(tokenizer, captions):
    """`fullgraph=True` raises at any graph break: packing's gathers and mask are traced with the model."""
    packed = task(tokenizer)
    batch = collated(packed, captions[:48])
    model = packed.build_model().eval()
    eager = packed.loss(model, batch, torch.Generator().manual_seed(0))[1]
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    graph = packed.loss(compiled, batch, torch.Generator().manual_seed(0))[1]
    for name, value in eager.items():
        torch.testing.assert_close(graph[name], value, rtol=1e-4, atol=1e-5, msg=name)
