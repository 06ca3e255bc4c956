"""What a training step computes and how much of the device that is (issue 34): the achieved FLOPs `vlkd.flops`
adds up against what PyTorch's own FLOP counter sees a BERT step run, the peak MFU divides by, and MFU as a job
records it and `vlkd status` says it."""

from __future__ import annotations

import pytest
import torch
from test_joblog import run_recorded_job
from torch.utils.flop_counter import FlopCounterMode

from vlkd.flops import (
    TRAINED,
    device_peak_tflops,
    encoder_forward_flops,
    linear_forward_flops,
    mlm_head_forward_flops,
)
from vlkd.joblog import describe_progress, read_progress
from vlkd.models.bert import bert_config
from vlkd.specs.shapes import ModelShape

VOCAB = 500


@pytest.mark.parametrize("length", [24, 40])
def test_the_achieved_count_is_what_torch_counts_a_bert_step_running(length: int) -> None:
    """Forward and backward of the encoder over a padded batch (padding is computed too) and of the MLM head at
    the positions it scores: torch's `FlopCounterMode` counts every matrix product and attention kernel run."""
    from transformers import BertForMaskedLM

    shape = ModelShape.model_validate("tiny")
    model = BertForMaskedLM(bert_config(shape, VOCAB)).train()
    batch, positions = 3, 10
    ids = torch.randint(5, VOCAB, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2 :] = 0
    with FlopCounterMode(display=False) as counter:
        hidden = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        model.cls(hidden.flatten(0, 1)[torch.arange(positions)]).sum().backward()
    expected = TRAINED * (encoder_forward_flops(shape, batch, length) + mlm_head_forward_flops(shape, VOCAB, positions))
    assert counter.get_total_flops() == expected


def test_a_stack_of_linear_layers_counts_two_flops_per_multiply_add() -> None:
    head = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 96))
    with FlopCounterMode(display=False) as counter:
        head(torch.randn(7, 64))
    assert counter.get_total_flops() == linear_forward_flops(7, 64, 64, 96)


def test_the_peak_is_the_stated_one_else_none_on_a_cpu() -> None:
    assert device_peak_tflops(torch.device("cpu")) is None
    assert device_peak_tflops(torch.device("cpu"), stated=0.5) == 0.5


def test_a_jobs_utilisation_is_in_its_recorded_progress_and_in_status_words(tmp_path) -> None:
    usage = "{'tflops': 412.0, 'mfu': 0.4512, 'mfu_achieved': 0.4166}"
    finished, store, _ = run_recorded_job(
        tmp_path, f"from vlkd.joblog import report_progress; report_progress(5, 10, 'step', 2.0, {usage})"
    )
    assert finished.returncode == 0, finished.stderr
    progress = read_progress(store.storage, "job-1")
    assert progress["utilisation"] == {"tflops": 412.0, "mfu": 0.4512, "mfu_achieved": 0.4166}
    assert describe_progress(progress) == (
        "5/10 steps, 2 steps/s, eta 0:00:02, 412 TFLOP/s per worker, MFU 45.1% (achieved 41.7%)"
    )
    without_peak = {**progress, "utilisation": {"tflops": 0.0123}}
    assert describe_progress(without_peak).endswith(", 0.0123 TFLOP/s per worker")
