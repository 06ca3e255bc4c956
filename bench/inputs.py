"""Benchmark inputs written straight into vlkd's artifact formats (nothing is decoded to make them): `features`
shards of random 2560-d frame features, token and text corpora, an SST-2 task file, a teacher and a student of random
weights, one long video."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np

from vlkd.artifacts import ArtifactStore, collect_files
from vlkd.data import features as fmt
from vlkd.data import text as textdata

DIMS = (512, 2048)  # CLIP ViT-B/32 + 3D-ResNeXt, the paper's 2560-d frame features
CLIPS_PER_VIDEO = 8
WORDS = [f"{a}{b}" for a in ("ka", "mo", "ti", "ru", "se", "lo", "pa", "ne") for b in ("n", "r", "st", "x", "m", "")]
TOKENIZER = "tokenizer/scale"


class Inputs:
    """What the stages read, written straight into their artifact formats."""

    def __init__(self, store: ArtifactStore, work: Path, seed: int = 0) -> None:
        self.store = store
        self.work = work
        self.rng = np.random.default_rng(seed)
        self.words = random.Random(seed)

    def _folder(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))

    def sentence(self, low: int = 6, high: int = 16) -> str:
        return " ".join(self.words.choice(WORDS) for _ in range(self.words.randint(low, high)))

    def tokenizer(self) -> Path:
        sentences = [self.sentence() for _ in range(2000)]
        tokenizer = textdata.train_tokenizer(lambda: sentences, 400, 1, True)
        folder = self._folder("tokenizer")
        textdata.save_tokenizer(tokenizer, folder)
        self.store.publish("tokenizer", TOKENIZER.split("/")[1], collect_files([folder]))
        return folder

    def features(self, name: str, clips: int, frames_per_clip: int = 8, clips_per_video: int = CLIPS_PER_VIDEO) -> None:
        """`clips` clips of `frames_per_clip` frames, `clips_per_video` to a video (stored together, as preprocessing
        writes them), each with a caption."""
        folder = self._folder(f"features-{name}")

        def put(path: str, local: Path) -> None:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, folder / path)

        writer = fmt.FeaturesWriter(put, self._folder("scratch"), 256, DIMS, 1.0, 512)
        for v in range(-(-clips // clips_per_video)):
            video_id = f"video-{v:07d}"
            count = min(clips_per_video, clips - v * clips_per_video)
            frames = self.rng.standard_normal((count, frames_per_clip, sum(DIMS)), dtype=np.float32)
            video = [fmt.Clip(video_id, c, 8.0 * c, 8.0 * c + 8, self.sentence(), frames[c]) for c in range(count)]
            writer.add_video(video_id, 8.0 * count, count * frames_per_clip, video)
        writer.close()
        self.store.publish("features", name, collect_files([folder]), parents=[TOKENIZER])

    def corpus(self, name: str, sequences: int, tokenizer: Path, max_len: int = 64) -> None:
        """`sequences` token sequences of `max_len / 4` to `max_len` tokens, [CLS] ... [SEP]."""
        from transformers import BertTokenizerFast

        vocab = len(BertTokenizerFast.from_pretrained(tokenizer))
        lengths = self.rng.integers(max_len // 4, max_len - 1, sequences)
        rows = ([2, *self.rng.integers(5, vocab, n).tolist(), 3] for n in lengths)
        folder = self._folder(f"corpus-{name}")
        textdata.write_shards(rows, folder, 4096, 64, 0, max_len)
        self.store.publish("corpus", name, collect_files([folder]), parents=[TOKENIZER])

    def text(self, name: str, paragraphs: int) -> None:
        folder = self._folder(f"text-{name}")
        per_file = 2000
        for start in range(0, paragraphs, per_file):
            lines = [self.sentence(20, 60) for _ in range(min(per_file, paragraphs - start))]
            (folder / f"part-{start // per_file:04d}.txt").write_text("\n".join(lines) + "\n")
        self.store.publish("dataset", name, collect_files([folder]))

    def task(self, name: str, examples: int) -> None:
        from vlkd.data.synth_tasks import write_sst2

        folder = self._folder(f"task-{name}")
        write_sst2(folder, random.Random(0), examples, 200)
        self.store.publish("dataset", name, collect_files([folder]))

    def models(self, tokenizer: Path, max_frames: int) -> None:
        """A teacher and a student of random weights (`tiny`), for the distill and eval stages. The teacher's manifest
        keeps the spec of its shape and frames, as a trained one does (the voken bank reads it: `trained_with`)."""
        import torch

        from vlkd.models.student import Student
        from vlkd.models.teacher import Teacher
        from vlkd.specs import ModelShape, parse_spec

        torch.manual_seed(0)
        shape, vocab = ModelShape(preset="tiny"), len(textdata.load_vocab_tokenizer(tokenizer / "vocab.txt", True))
        teacher = self._folder("teacher")
        Teacher.build(shape, shape, vocab, sum(DIMS)).save(teacher, tokenizer)
        (teacher / "teacher.json").write_text(json.dumps({"feature_dim": sum(DIMS)}))
        spec = {"features": "features/scale", "tokenizer": TOKENIZER, "model": "tiny", "max_frames": max_frames}
        spec = parse_spec({"stage": "teacher", "name": "scale", **spec})
        self.store.publish("teacher", "scale", collect_files([teacher]), spec=spec, parents=[TOKENIZER])
        student = self._folder("student")
        Student.build(shape, vocab, None).save(student, tokenizer)
        self.store.publish("student", "scale", collect_files([student]), parents=[TOKENIZER])

    def video(self, name: str, seconds: int) -> None:
        """One video of `seconds` (160x120 at 8 fps, a moving gradient) with a caption every 4 s."""
        from vlkd.data.synth_video import encode_video

        folder = self._folder(f"video-{name}")
        width, height, fps = 160, 120, 8
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]

        def frames():
            for k in range(seconds * fps):
                shifted = np.roll(ramp, k, axis=1) * np.array([1.0, 0.5, 0.25], np.float32)
                yield np.broadcast_to(shifted, (height, width, 3)).astype(np.uint8)

        encode_video(frames(), folder / "long.mp4", fps, width, height)
        captions = [
            {"video_id": "long", "start": float(t), "end": float(t + 4), "text": self.sentence()}
            for t in range(0, seconds - 4, 4)
        ]
        (folder / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions))
        self.store.publish("dataset", name, collect_files([folder]))
