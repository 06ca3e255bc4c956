"""The teacher stage (Sec. 3.2) on a real local Ray: model shapes, the published artifact, resume, learning."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch

from vlkd import losses
from vlkd.curves import LOGS, METRICS_FILE
from vlkd.jobs import teacher
from vlkd.masking import IGNORE_INDEX, draw_masking
from vlkd.models.teacher import Teacher, TeacherPretraining
from vlkd.runtime import JobContext
from vlkd.specs import ModelShape, parse_spec
from vlkd.train_loop import Loop

pytestmark = pytest.mark.timeout(600)


def teacher_spec(**overrides):
    spec = {
        "stage": "teacher",
        "name": "t",
        "features": "features/synth",
        "tokenizer": "tokenizer/synth",
        "model": "tiny",
        "max_text_len": 24,
        "max_frames": 8,
        "train": {
            "batch_size": 4,
            "max_steps": 12,
            "log_every": 4,
            "eval_every": 6,
            "checkpoint_every": 6,
            "val_size": 4,
        },
        "resources": {"num_workers": 0},
    }
    return parse_spec({**spec, **overrides})


@pytest.fixture(scope="module")
def inputs(make_store, populate, tmp_path_factory):
    """An S3 store (the moto server) with the synthetic dataset's features (demo pixel encoders) and tokenizer."""
    folder = tmp_path_factory.mktemp("teacher-inputs")
    store = make_store("s3", folder)  # checkpoints, local and Ray Train's, go to S3 as on a cluster
    populate(store, folder, "text")
    return store


@pytest.fixture
def context(inputs, tmp_path):
    return JobContext(f"teacher-{tmp_path.name}", inputs, tmp_path)


def pretraining(shape: ModelShape, vocab_size: int, feature_dim: int) -> TeacherPretraining:
    """The module the stage trains, with both objectives at weight 1, L_CT on the unmasked text."""
    teacher = Teacher.build(shape, shape, vocab_size=vocab_size, feature_dim=feature_dim)
    return TeacherPretraining(teacher, {"ct": 1.0, "mlm": 1.0}, 1.0, contrastive_on_masked=False)


@pytest.mark.parametrize("preset", ["bert-6l-512h", "bert-12l-768h"])
def test_paper_presets_build_and_take_a_step(preset):
    shape = ModelShape(preset=preset)
    model = pretraining(shape, 30522, 2560)
    assert model.language_model.config.num_hidden_layers == shape.num_layers
    assert model.video_encoder.encoder.config.hidden_size == shape.hidden_size
    ids = torch.randint(1000, 30522, (2, 16))
    attention = torch.ones(2, 16, dtype=torch.long)
    video = {"features": torch.randn(2, 6, 2560), "frame_mask": torch.ones(2, 6, dtype=torch.bool)}
    with torch.no_grad():
        assert model.text_states(ids, attention).shape == (2, 16, shape.hidden_size)
        assert model.video_encoder(video["features"], video["frame_mask"])[1].shape == (2, shape.hidden_size)
        assert model.language_model.cls(model.text_states(ids, attention)).shape == (2, 16, 30522)
    masking = draw_masking(ids, torch.zeros(2, 16, dtype=torch.bool), 103, 30522, 0.5)
    out = model(
        ids,
        attention,
        masked_input_ids=masking.input_ids,
        mlm_labels=masking.position_labels,
        mlm_positions=masking.positions,
        negatives=(torch.tensor([1, 0]), torch.tensor([1, 0])),
        **video,
    )
    assert out.keys() == {"loss", "ct", "mlm"}
    out["loss"].backward()
    assert (
        model.video_encoder.project.weight.grad is not None
        and model.language_model.cls.predictions.decoder.weight.grad is not None
    )


def test_the_one_pass_teacher_reads_the_masked_text_for_both_terms():
    shape = ModelShape(preset="tiny")
    two_texts = pretraining(shape, 100, 8).eval()
    one_text = TeacherPretraining(two_texts, two_texts.weights, 1.0, contrastive_on_masked=True).eval()  # same LM
    ids, attention = torch.randint(5, 100, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    masked = ids.clone()
    masked[:, 2] = 4
    labels = torch.where(masked != ids, ids, IGNORE_INDEX)
    negatives = (torch.tensor([1, 0]), torch.tensor([1, 0]))
    video = {"features": torch.randn(2, 3, 8), "frame_mask": torch.ones(2, 3, dtype=torch.bool)}
    inputs = {"masked_input_ids": masked, "mlm_labels": labels, "negatives": negatives, **video}
    with torch.no_grad():
        one_pass = one_text(ids, attention, **inputs)
        two_passes = two_texts(ids, attention, **inputs)
        video_repr = two_texts.video_encoder(video["features"], video["frame_mask"])[1]

        def contrastive(states):
            return losses.token_contrastive_loss(states, attention.bool(), video_repr, *negatives)

        torch.testing.assert_close(one_pass["ct"], contrastive(two_texts.text_states(masked, attention)))
        torch.testing.assert_close(two_passes["ct"], contrastive(two_texts.text_states(ids, attention)))
        mlm = losses.mlm_loss(two_texts.language_model(masked, attention).logits, labels)
        torch.testing.assert_close(one_pass["mlm"], mlm)
        torch.testing.assert_close(two_passes["mlm"], mlm)
    assert not torch.allclose(one_pass["ct"], two_passes["ct"])


def test_teacher_is_published_with_its_parents_and_loads_in_transformers(context, tmp_path):
    from transformers import AutoTokenizer, BertForMaskedLM

    spec = teacher_spec()
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"peak_tflops": 0.01})})  # a stated peak
    (manifest,) = teacher.run(spec, context)
    assert manifest.parents == ["features/synth:v1", "tokenizer/synth:v1"]
    assert manifest.metrics["steps"] == 12 and "val_r1" in manifest.metrics and "val_median_rank" in manifest.metrics
    assert manifest.metrics["peak_tokens_per_s"] > 0
    assert manifest.metrics["published_step"] == manifest.metrics["best_step"]  # trained until it converges
    out = tmp_path / "teacher"
    context.store.fetch(manifest.ref, out)
    language_model = BertForMaskedLM.from_pretrained(out / "language_model", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out / "language_model", local_files_only=True)
    assert language_model.config.vocab_size == len(tokenizer)
    rebuilt = Teacher.load(out)
    assert rebuilt.video_encoder.feature_dim == 384  # pixels (192) + pixel-motion (192)
    records = [json.loads(line) for line in (out / LOGS / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [4, 8, 12]
    assert [r["step"] for r in records if "val_loss" in r] == [6, 12]
    assert any(p.name.startswith("events.out.tfevents") for p in (out / LOGS).iterdir())
    # the device's use at each logged step (`vlkd.flops`): MFU counted as 6 x parameters x tokens, and achieved
    parameters = sum(p.numel() for p in rebuilt.parameters() if p.requires_grad)
    for record in (r for r in records if "loss" in r):
        assert record["tflops"] > 0 and record["mfu_achieved"] == pytest.approx(record["tflops"] / 0.01)
        counted = 6 * parameters * record["tokens_per_s"] / 1e12 / 0.01
        assert record["mfu"] == pytest.approx(counted, rel=1e-6)
        assert record["mfu"] != pytest.approx(record["mfu_achieved"], rel=0.01)  # two counts, not one twice


@pytest.mark.parametrize("visual_input", ["video", "middle_frame"])
def test_the_eval_stage_recomputes_the_retrieval_the_teacher_validated_with(context, tmp_path, visual_input):
    """One measure on one held-out split: the eval stage's retrieval of the published weights is the validation
    retrieval their manifest records."""
    from vlkd.evaluation.retrieval import teacher_retrieval
    from vlkd.specs import RetrievalSpec

    (manifest,) = teacher.run(teacher_spec(name=f"recomputed-{visual_input}", visual_input=visual_input), context)
    recomputed = teacher_retrieval(context.store, RetrievalSpec(teacher=str(manifest.ref)), tmp_path / "page")
    validated = {k.removeprefix("val_"): v for k, v in manifest.metrics.items() if k.startswith("val_")}
    assert recomputed["queries"] >= 4  # train.val_size
    for name in ("queries", "r1", "r5", "r10", "median_rank"):
        assert recomputed[name] == pytest.approx(validated[name], abs=1e-3), name


def test_the_eval_stages_retrieval_reads_captions_as_the_teachers_training_does(context, tmp_path):
    """The held-out captions the eval stage ranks are tokenised and padded by training's own path (`CaptionTokens`,
    `pad_sequences`): each caption's tokenizer ids, padded to a multiple of `buckets.TOKENS`, as a compiled step
    sees them, not to each batch's longest caption."""
    from transformers import BertTokenizerFast

    from vlkd.data.buckets import TOKENS
    from vlkd.evaluation.retrieval import held_out_batches

    spec = teacher_spec(max_text_len=512)  # no caption is cut: the padding is what is left to tell the paths apart
    context.store.fetch(spec.tokenizer, tmp_path / "tok")
    tokenizer = BertTokenizerFast.from_pretrained(tmp_path / "tok", local_files_only=True)
    features = str(context.store.resolve(spec.features))
    batches = list(held_out_batches(context.store, spec, features, tokenizer, 192))
    assert batches
    for clips, batch in batches:
        ids, attention = batch["input_ids"], batch["attention_mask"]
        assert ids.shape[1] % TOKENS == 0
        expected = tokenizer([c.text for c in clips])["input_ids"]
        assert [row[mask.bool()].tolist() for row, mask in zip(ids, attention, strict=True)] == expected


@pytest.mark.parametrize(
    ("overrides", "feature_dim"),
    [
        ({"objectives": ["ct"]}, 384),
        ({"objectives": ["mlm"]}, 384),
        ({"visual_input": "middle_frame"}, 192),
        ({"contrastive_text": "masked"}, 384),
    ],
    ids=["ct-only", "mlm-only", "image-level", "one-lm-pass"],
)
def test_ablation_switches_train_and_publish(context, tmp_path, overrides, feature_dim):
    (manifest,) = teacher.run(teacher_spec(**overrides), context)
    context.store.fetch(manifest.ref, tmp_path / "t")
    assert json.loads((tmp_path / "t" / "teacher.json").read_text())["feature_dim"] == feature_dim
    objectives = overrides.get("objectives", ["ct", "mlm"])
    assert {k for k in ("val_ct", "val_mlm") if k in manifest.metrics} == {f"val_{o}" for o in objectives}


def left_on(temp: Path) -> list[str]:
    """What a run left in the machine's temporary folder, but torch's compile cache (kept across runs on purpose)."""
    return sorted(p.name for p in temp.iterdir() if not p.name.startswith("torchinductor_"))


def test_a_killed_run_resumes_from_its_last_checkpoint(context, monkeypatch):
    """It also leaves no files on the machine it trained on: a checkpoint once saved or loaded, and the worker's
    folder once the run ends, crashed or finished, go (a node runs job after job for days)."""
    machine = context.scratch / "machine-temp"
    machine.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(machine))
    original, checkpoint = Loop._micro_step, Loop._checkpoint
    saved = []

    def crash_after_step_8(self, batch, window):
        if self.state.step == 8:
            raise RuntimeError("worker lost")
        original(self, batch, window)

    def save_and_look(self, final):
        checkpoint(self, final)
        saved.append(sorted(p.name for p in self.work.iterdir() if p.name != LOGS))

    monkeypatch.setattr(Loop, "_checkpoint", save_and_look)
    with monkeypatch.context() as patch:
        patch.setattr(Loop, "_micro_step", crash_after_step_8)
        with pytest.raises(RuntimeError, match="worker lost"):
            teacher.run(teacher_spec(name="killed"), context)
    assert context.store.versions("teacher", "killed") == []
    assert left_on(machine) == []

    (manifest,) = teacher.run(teacher_spec(name="killed"), context)  # the same job id, submitted again
    assert left_on(machine) == []
    assert saved and not any(saved)  # no checkpoint on the machine once saved, nor the one it resumed from
    assert manifest.metrics["resumed_from"] == [6]
    assert manifest.metrics["steps"] == 12
    out = context.scratch / "resumed"
    context.store.fetch(manifest.ref, out)
    records = [json.loads(line) for line in (out / LOGS / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [4, 8, 12]  # the log lost nothing before the checkpoint


def test_a_resumed_run_logs_the_losses_of_an_uninterrupted_one(context, monkeypatch, tmp_path):
    """Exact resume: the masks and negatives drawn, the dropout, the batches of the epoch and the logging window all
    continue from the checkpoint, so every loss logged after it is the uninterrupted run's."""
    steps = {"max_steps": 12, "log_every": 1, "eval_every": 12, "checkpoint_every": 5}

    def logged(name: str) -> dict[int, dict[str, float]]:
        train = {**teacher_spec().train.model_dump(), **steps}
        job = JobContext(f"{context.job_id}-{name}", context.store, tmp_path)  # a job id is one run
        (manifest,) = teacher.run(teacher_spec(name=name, train=train), job)
        context.store.fetch(manifest.ref, tmp_path / name)
        records = [json.loads(line) for line in (tmp_path / name / LOGS / METRICS_FILE).read_text().splitlines()]
        return {r["step"]: {k: r[k] for k in ("loss", "ct", "mlm")} for r in records if "loss" in r}

    straight = logged("straight")
    original = Loop._micro_step

    def crash_after_step_8(self, batch, window):
        if self.state.step == 8:
            raise RuntimeError("node lost")
        original(self, batch, window)

    with monkeypatch.context() as patch:
        patch.setattr(Loop, "_micro_step", crash_after_step_8)
        with pytest.raises(RuntimeError, match="node lost"):
            logged("resumed")
    resumed = logged("resumed")  # the same job id: it resumes at step 5
    assert context.store.manifest("teacher/resumed").metrics["resumed_from"] == [5]
    assert sorted(resumed) == sorted(straight) == list(range(1, 13))
    for step in range(6, 13):
        assert resumed[step] == pytest.approx(straight[step], rel=1e-5), step


class CrashOnce(teacher.TeacherTask):
    """The teacher's task, but the first time it reaches its 9th training micro-step the worker process dies, once
    Ray Train has registered the step-6 checkpoint (its controller records it in the run's snapshot file)."""

    def __init__(self, spec, tokenizer, feature_dim, marker: str, place):
        super().__init__(spec, tokenizer, feature_dim)
        self.marker = marker
        self.place = place
        self.calls = 0

    def loss(self, model, batch, generator):
        self.calls += model.training  # validation batches do not count
        if self.calls == 9 and not Path(self.marker).exists():
            Path(self.marker).touch()
            import os
            import time

            snapshot = f"{self.place.prefix}/checkpoint_manager_snapshot.json"
            deadline = time.monotonic() + 120
            while not self._registered(snapshot) and time.monotonic() < deadline:
                time.sleep(0.2)
            os._exit(1)  # the worker is lost, not just an exception
        return super().loss(model, batch, generator)

    def _registered(self, snapshot: str) -> bool:
        storage = self.place.storage
        return storage.exists(snapshot) and json.loads(storage.read_bytes(snapshot)).get("latest_checkpoint_result")


@pytest.mark.slow
def test_a_lost_ray_train_worker_is_replaced_and_resumes(context, tmp_path):
    import sys

    import ray.cloudpickle
    from transformers import BertTokenizerFast

    from vlkd.checkpoints import RunPlace
    from vlkd.data.clips import clip_datasets
    from vlkd.specs import Resources
    from vlkd.train import fit

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the test module
    spec = teacher_spec(resources={"num_workers": 1})
    context.store.fetch(spec.tokenizer, tmp_path / "tok")
    tokenizer = BertTokenizerFast.from_pretrained(tmp_path / "tok", local_files_only=True)
    splits, info = clip_datasets(
        context.store, spec.features, 4, 0, spec.resources, spec.train.batch_size, spec.train.shuffle_window
    )
    place = RunPlace(context.store.storage, "lost-worker")
    task = CrashOnce(spec, tokenizer, info.feature_dim, str(tmp_path / "crashed"), place)
    final = tmp_path / "final"
    resources = Resources(num_workers=1)
    state = fit(task, spec.train, spec.optim, resources, splits, place, 0, "teacher/lost-worker", final)["state"]
    assert (tmp_path / "crashed").exists()
    assert state["resumed_from"] == [6] and state["step"] == 12
