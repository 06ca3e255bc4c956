"""The shared training loop's parts on CPU: compiled steps, the GPU paths it takes, its optimizer and schedule."""

from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa
import pytest
import torch

from vlkd.data import text as textdata
from vlkd.jobs.teacher import TeacherTask
from vlkd.model_wrappers import compile_model
from vlkd.optim import build_optimizer, build_scheduler
from vlkd.specs import OptimSpec, parse_spec

WORDS = ("a", "red", "circle", "moves", "to", "the", "left", "while", "blue", "square", "stays", "still", "grows")


@pytest.fixture(scope="module")
def teacher_task() -> TeacherTask:
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, 8)) for _ in range(200)]
    tokenizer = textdata.train_tokenizer(lambda: lines, 100, 1, True)
    spec = parse_spec(
        {"stage": "teacher", "name": "t", "features": "features/f", "tokenizer": "tokenizer/t", "model": "tiny"}
    )
    return TeacherTask(spec, tokenizer, feature_dim=16)


def a_batch(task: TeacherTask) -> dict:
    """Four captions and clips of 3, 5, 2 and 4 frames, as a features artifact holds them (Arrow), through
    the read task's `prepare_rows` and the collate."""
    rng = np.random.default_rng(1)
    frames = [3, 5, 2, 4]
    rows = pa.table(
        {
            "video_id": ["v0", "v1", "v0", "v2"],
            "text": [" ".join(rng.choice(WORDS, 6)) for _ in frames],
            "num_frames": pa.array(frames, pa.int32()),
            "features": [rng.normal(size=n * 16).astype(np.float16) for n in frames],
        }
    )
    return task.collate(task.prepare_rows(rows))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_compiled_step_computes_the_eager_loss_and_gradients(teacher_task):
    eager = teacher_task.build_model().eval()  # no dropout: compiled kernels draw their own random numbers
    compiled = compile_model(copy.deepcopy(eager))
    batch = a_batch(teacher_task)
    results = []
    for model in (eager, compiled):
        loss, terms = teacher_task.loss(model, batch, torch.Generator().manual_seed(0))
        loss.backward()
        grads = {name: p.grad for name, p in getattr(model, "_orig_mod", model).named_parameters()}
        results.append((loss.detach(), terms, grads))
    (eager_loss, eager_terms, eager_grads), (compiled_loss, compiled_terms, compiled_grads) = results
    assert set(eager_terms) == set(compiled_terms) == {"loss", "ct", "mlm", "same_video_negatives", "videos_per_batch"}
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-5)
    assert eager_grads.keys() == compiled_grads.keys()
    for name, grad in eager_grads.items():
        if grad is not None:
            torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)


def test_the_language_models_use_pytorch_scaled_dot_product_attention(teacher_task):
    """SDPA runs flash or memory-efficient attention kernels on GPUs; the eager path would not."""
    model = teacher_task.build_model()
    assert model.language_model.config._attn_implementation == "sdpa"
    assert model.video_encoder.encoder.config._attn_implementation == "sdpa"


def test_adamw_is_fused_on_the_cpu_and_updates_as_torchs_default_does(teacher_task):
    """One kernel over all parameters on a CPU as on a GPU (bench/optimizer.py, bench/gpu.sh measure them), for
    the same update as torch's default loop over the tensors."""
    model = teacher_task.build_model()
    twin = copy.deepcopy(model)
    fused = build_optimizer(teacher_task.spec.optim, model)
    assert fused.defaults["fused"] is True
    plain = build_optimizer(teacher_task.spec.optim, twin)
    groups = [{k: v for k, v in group.items() if k not in ("fused", "foreach")} for group in plain.param_groups]
    plain = torch.optim.AdamW(groups)
    assert plain.defaults["fused"] is None
    assert [g["weight_decay"] for g in plain.param_groups] == [g["weight_decay"] for g in fused.param_groups]
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for a, b in zip(model.parameters(), twin.parameters(), strict=True):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        fused.step()
        plain.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def learning_rates(optim: OptimSpec, max_steps: int) -> list[float]:
    """The rate of each of `max_steps` steps, as a fraction of the peak."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optim, optimizer, max_steps)
    rates = []
    for _ in range(max_steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_the_rate_warms_up_from_zero_then_decays_linearly_to_zero():
    """Hugging Face's (BERT's) schedule: warm-up over int(0.2 * 10) = 2 steps, then decay to 0 at step 10."""
    rates = learning_rates(OptimSpec(warmup_fraction=0.2), 10)
    assert rates == pytest.approx([0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


def test_a_constant_schedule_keeps_the_peak_rate_after_its_warm_up():
    assert learning_rates(OptimSpec(warmup_fraction=0.5, schedule="constant"), 4) == pytest.approx([0, 0.5, 1, 1])


def test_the_student_computes_what_bert_for_masked_lm_computes():
    """The student calls BertForMaskedLM's encoder and MLM head directly (no per-call output hooks): same logits
    and last hidden states as the model asked for its hidden states."""
    from vlkd.models.student import Student
    from vlkd.specs import ModelShape

    student = Student.build(ModelShape(preset="tiny"), 120, head_to=None).eval()
    ids = torch.randint(5, 120, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    out = student(ids, mask)
    reference = student.language_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert torch.allclose(out["logits"], reference.logits, atol=1e-6)
    assert torch.allclose(out["hidden"], reference.hidden_states[-1], atol=1e-6)
    assert out["kd"] is out["hidden"]
