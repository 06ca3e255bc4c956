"""The teacher's training step (Sec. 3.2) on CPU: the MLM head at the masked positions only, one LM pass over both
texts, the whole step (model and losses) in one compiled graph, and what it reports without waiting for the device."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from vlkd import flops, losses, masking
from vlkd.data import text as textdata
from vlkd.jobs.teacher import TeacherTask
from vlkd.models.teacher import Teacher, VideoEncoder
from vlkd.specs import ModelShape, parse_spec

WORDS = ("a", "red", "circle", "moves", "to", "the", "left", "while", "blue", "square", "stays", "still", "grows")
FEATURE_DIM = 16
BOTH = {"objectives": ["ct", "mlm"]}


@pytest.fixture(scope="module")
def tokenizer():
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, 8)) for _ in range(200)]
    return textdata.train_tokenizer(lambda: lines, 100, 1, True)


def teacher_task(tokenizer, sparse_mlm: bool = True, **overrides) -> TeacherTask:
    spec = {"stage": "teacher", "name": "t", "features": "features/f", "tokenizer": "tokenizer/t", "model": "tiny"}
    return TeacherTask(parse_spec({**spec, **overrides}), tokenizer, FEATURE_DIM, sparse_mlm=sparse_mlm)


@pytest.fixture(scope="module")
def batch(tokenizer) -> dict[str, torch.Tensor]:
    """Eight captions of 20 to 60 words (padded to the longest: about 500 token slots, so the sparse head's
    capacity is well under them) and clips of 2 to 6 frames, from 5 videos, as a features artifact holds
    them (Arrow, float16 features), through the read task's `prepare_rows` and the collate."""
    rng = np.random.default_rng(1)
    words = [20, 60, 35, 41, 27, 52, 33, 45]
    frames = [3, 5, 2, 4, 6, 3, 2, 5]
    rows = pa.table(
        {
            "video_id": ["v0", "v1", "v0", "v2", "v3", "v1", "v4", "v0"],
            "text": [" ".join(rng.choice(WORDS, n)) for n in words],
            "num_frames": pa.array(frames, pa.int32()),
            "features": [rng.normal(size=n * FEATURE_DIM).astype(np.float16) for n in frames],
        }
    )
    task = teacher_task(tokenizer)
    return task.collate(task.prepare_rows(rows))


def step(task: TeacherTask, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict, dict]:
    """The loss, terms and parameter gradients of one step with the draws of seed 0."""
    model.zero_grad(set_to_none=True)
    loss, terms = task.loss(model, batch, torch.Generator().manual_seed(0))
    loss.backward()
    module = getattr(model, "_orig_mod", model)
    return loss.detach(), terms, {name: p.grad for name, p in module.named_parameters() if p.grad is not None}


def assert_same_gradients(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, gradient in expected.items():
        torch.testing.assert_close(actual[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_the_sparse_mlm_head_gives_the_full_heads_loss_and_gradients(tokenizer, batch):
    sparse, full = teacher_task(tokenizer, mlm_probability=0.3), teacher_task(tokenizer, False, mlm_probability=0.3)
    model = sparse.build_model().eval()  # no dropout: both forms see the same network
    sparse_loss, sparse_terms, sparse_grads = step(sparse, model, batch)
    full_loss, full_terms, full_grads = step(full, model, batch)
    torch.testing.assert_close(sparse_terms["mlm"], full_terms["mlm"])
    torch.testing.assert_close(sparse_loss, full_loss)
    assert_same_gradients(sparse_grads, full_grads)


def test_the_sparse_head_scores_the_drawn_positions_only(tokenizer, batch):
    seen = []
    for sparse_mlm in (True, False):
        task = teacher_task(tokenizer, sparse_mlm)
        model = task.build_model()
        model.language_model.cls.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[:-1]))
        task.loss(model, batch, torch.Generator().manual_seed(0))
    size, length = batch["input_ids"].shape
    assert seen == [(masking.prediction_capacity(size * length, 0.15),), (size, length)]
    assert seen[0][0] < size * length / 2


def test_one_lm_pass_over_both_texts_gives_two_passes_loss_and_gradients(tokenizer, batch):
    """L_CT on the unmasked text and MLM on the masked one (the paper's reading), as one [2B, L] LM pass."""
    task = teacher_task(tokenizer, **BOTH)
    model = task.build_model().eval()
    passes = []
    model.language_model.bert.register_forward_pre_hook(
        lambda _, args, kwargs: passes.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    loss, terms, grads = step(task, model, batch)
    assert passes == [(2 * len(batch["input_ids"]), batch["input_ids"].shape[1])]

    model.zero_grad(set_to_none=True)
    inputs = task.inputs(batch, torch.Generator().manual_seed(0))
    mask = batch["attention_mask"]
    video = model.video_encoder(batch["features"], batch["frame_mask"])[1]
    text = model.text_states(batch["input_ids"], mask)
    ct = losses.token_contrastive_loss(text, mask.bool(), video, *inputs["negatives"], task.spec.margin)
    masked = model.text_states(inputs["masked_input_ids"], mask)
    logits = model.language_model.cls(masking.mlm_positions(masked, inputs["mlm_positions"]))
    mlm = losses.mlm_loss(logits, inputs["mlm_labels"])
    (ct + mlm).backward()
    assert len(passes) == 3
    torch.testing.assert_close(terms["ct"], ct.detach())
    torch.testing.assert_close(terms["mlm"], mlm.detach())
    torch.testing.assert_close(loss, (ct + mlm).detach())
    assert_same_gradients(grads, {n: p.grad for n, p in model.named_parameters() if p.grad is not None})


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("overrides", "terms"),
    [
        (BOTH, {"ct", "mlm", "same_video_negatives"}),
        ({**BOTH, "contrastive_text": "masked"}, {"ct", "mlm", "same_video_negatives"}),
        ({"objectives": ["ct"]}, {"ct", "same_video_negatives"}),
        ({"objectives": ["mlm"]}, {"mlm"}),
    ],
    ids=["ct+mlm", "ct+mlm-one-text", "ct", "mlm"],
)
def test_the_whole_step_compiles_to_one_graph_and_computes_the_eager_losses(tokenizer, batch, overrides, terms):
    """`fullgraph=True` raises at any graph break: the model and every loss term are one compiled graph. Compiled
    with `aot_eager`, torch.compile's graph capture and autograd without its code generation (36 CPU-s for these
    four with it, 11 without): test_train.py runs a step through inductor, as `train.compile` does."""
    task = teacher_task(tokenizer, **overrides)
    model = task.build_model().eval()  # no dropout: compiled kernels draw their own random numbers
    eager = task.loss(model, batch, torch.Generator().manual_seed(0))[1]
    graph = torch.compile(model, backend="aot_eager", fullgraph=True)
    compiled = task.loss(graph, batch, torch.Generator().manual_seed(0))[1]
    assert compiled.keys() == eager.keys() == {"loss", "videos_per_batch", *terms}
    for name, value in eager.items():
        torch.testing.assert_close(compiled[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_the_step_reports_its_terms_and_tokens_as_tensors_on_the_device(tokenizer, batch):
    """The loop reads them on the steps it logs only: a float here would wait for the GPU every step."""
    task = teacher_task(tokenizer)
    loss, terms = task.loss(task.build_model(), batch, torch.Generator().manual_seed(0))
    assert loss.requires_grad
    for name, value in terms.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad, name
    assert terms["loss"] == loss.detach()
    tokens = task.tokens(batch)
    assert isinstance(tokens, torch.Tensor) and tokens == batch["attention_mask"].sum()


def test_the_step_reads_no_tensors_value_on_the_host(tokenizer, batch, monkeypatch):
    """On a GPU each such read waits for the device. The draws are made on the CPU, where reading is free, and
    the read here is only of those tensors' shapes."""
    task = teacher_task(tokenizer)
    model = task.build_model()
    reads = []
    for name in ("__bool__", "__float__", "__int__", "item", "tolist", "numpy"):
        read = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda t, *a, _read=read, _name=name: reads.append(_name) or _read(t, *a)
        )
    task.loss(model, batch, torch.Generator().manual_seed(0))
    monkeypatch.undo()
    assert reads == []


def test_the_batch_counts_its_videos_when_it_is_collated(batch):
    assert batch["videos_per_batch"].dtype == torch.float32 and batch["videos_per_batch"] == 5


def test_the_sparse_form_counts_the_head_at_its_scored_positions_only(tokenizer, batch):
    sparse, full = teacher_task(tokenizer), teacher_task(tokenizer, False)
    size, length = batch["input_ids"].shape
    unscored = size * length - masking.prediction_capacity(size * length, 0.15)
    head = flops.mlm_head_forward_flops(sparse.spec.model, len(tokenizer), unscored)
    assert 0 < sparse.flops(batch) < full.flops(batch)
    assert full.flops(batch) - sparse.flops(batch) == pytest.approx(flops.TRAINED * head)


def test_one_text_for_both_terms_counts_one_lm_pass_fewer(tokenizer, batch):
    two_texts, one_text = teacher_task(tokenizer, **BOTH), teacher_task(tokenizer, **BOTH, contrastive_text="masked")
    size, length = batch["input_ids"].shape
    encoder = flops.encoder_forward_flops(two_texts.spec.model, size, length)
    assert two_texts.flops(batch) - one_text.flops(batch) == pytest.approx(flops.TRAINED * encoder)


def test_the_trained_module_keeps_the_teachers_weights_and_saved_layout(tokenizer, tmp_path):
    """Checkpoints and published weights of the stage's module are a `Teacher`'s, key for key."""
    model = teacher_task(tokenizer).build_model()
    model.save(tmp_path)
    loaded = Teacher.load(tmp_path).state_dict()
    assert loaded.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded[name], value, msg=name)


def test_the_video_encoder_takes_float16_features_on_float32_weights():
    encoder = VideoEncoder(FEATURE_DIM, ModelShape(preset="tiny")).eval()
    features = torch.randn(2, 3, FEATURE_DIM).half()
    mask = torch.ones(2, 3, dtype=torch.bool)
    torch.testing.assert_close(encoder(features, mask)[1], encoder(features.float(), mask)[1])


def _data_parallel_steps(rank: int, port: int, task: TeacherTask, batch: dict, steps: int) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(task.build_model(), find_unused_parameters=False)
        for _ in range(steps):
            step(task, model, batch)
        dist.barrier()  # no rank tears gloo down while the other still talks to it (seen to abort under load)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_workers_train_the_teacher_with_data_parallelism_as_ray_train_wraps_it(tokenizer, batch):
    """DDP without `find_unused_parameters` (`TeacherTask.ddp_find_unused` for L_CT + L_MLM), as Ray Train's
    `prepare_model` wraps the model, fails the second step if a trained parameter got no gradient in the first:
    V^T's word embeddings, never used (frames come in as input embeddings), must not be trained."""
    import socket

    import torch.multiprocessing as mp

    task = teacher_task(tokenizer, **BOTH)
    assert not task.ddp_find_unused
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mp.spawn(_data_parallel_steps, args=(port, task, batch, 3), nprocs=2)
