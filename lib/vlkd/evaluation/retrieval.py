"""Text-to-video retrieval of a teacher on its held-out clips, and a page of example queries with their top
retrieved clips (the paper's visualisation of learned grounding).

The held-out clips are the very ones the teacher stage validated on (same videos, by the teacher's own spec), so
the numbers are the held-out numbers of its manifest, recomputed, plus the examples.
"""

from __future__ import annotations

import html
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlkd.artifacts import ArtifactStore
from vlkd.data import features as fmt
from vlkd.data.clips import features_info, held_out, middle_frames, pad_features
from vlkd.errors import DataError, VlkdError
from vlkd.inputs import open_input
from vlkd.losses import mean_pool
from vlkd.metrics import retrieval_metrics
from vlkd.specs import RetrievalSpec, TeacherSpec

BATCH = 64


@dataclass
class HeldOutClip:
    video_id: str
    start: float
    end: float
    text: str
    features: np.ndarray


def held_out_clips(store: ArtifactStore, teacher: TeacherSpec, features: str) -> list[HeldOutClip]:
    source = open_input(features, store)
    info = features_info(source)
    validation = held_out(source, info, teacher.train.val_size, teacher.seed)
    if not validation.videos:
        raise DataError(f"the teacher held out no clips (train.val_size: 0): nothing to retrieve from {features}")
    columns = slice(0, info.dim_2d) if teacher.visual_input == "middle_frame" else slice(None)
    clips = []
    for path in validation.shards:
        for clip in fmt.read_clips(source.read_bytes(path), info.feature_dim):
            if clip.video_id in validation.videos:
                frames = clip.features[: teacher.max_frames, columns].astype(np.float32)
                frames = middle_frames(frames) if teacher.visual_input == "middle_frame" else frames
                clips.append(HeldOutClip(clip.video_id, clip.start, clip.end, clip.text, frames))
    return clips


@torch.no_grad()
def embed(model: Any, tokenizer: Any, clips: list[HeldOutClip], max_text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """-> text [N, H] (mean token state of each caption) and video [N, H] representations."""
    texts, videos = [], []
    for start in range(0, len(clips), BATCH):
        batch = clips[start : start + BATCH]
        encoded = tokenizer(
            [c.text for c in batch], padding=True, truncation=True, max_length=max_text_len, return_tensors="pt"
        )
        states = model.text_states(encoded["input_ids"], encoded["attention_mask"])
        texts.append(mean_pool(states, encoded["attention_mask"].bool()))
        padded, mask = pad_features([c.features for c in batch])
        videos.append(model.video_encoder(torch.from_numpy(padded), torch.from_numpy(mask))[1])
    return torch.cat(texts), torch.cat(videos)


def teacher_retrieval(store: ArtifactStore, spec: RetrievalSpec, out_dir: Path) -> dict[str, float]:
    """Retrieval metrics of `spec.teacher` on its held-out clips; writes `out_dir/index.html` and thumbnails."""
    from transformers import BertTokenizerFast

    from vlkd.models.teacher import LANGUAGE_MODEL, Teacher

    manifest = store.manifest(spec.teacher)
    if manifest.spec is None:
        raise VlkdError(f"{manifest.ref} carries no spec: was it made by the teacher stage?")
    teacher_spec = TeacherSpec.model_validate(manifest.spec)
    features = (
        str(store.resolve(spec.features))
        if spec.features
        else next(p for p in manifest.parents if p.startswith("features/"))
    )
    with tempfile.TemporaryDirectory(prefix="vlkd-retrieval-") as tmp:
        store.fetch(manifest.ref, Path(tmp))
        model = Teacher.load(Path(tmp)).eval()
        tokenizer = BertTokenizerFast.from_pretrained(Path(tmp) / LANGUAGE_MODEL, local_files_only=True)
    clips = held_out_clips(store, teacher_spec, features)
    text, video = embed(model, tokenizer, clips, teacher_spec.max_text_len)
    metrics = retrieval_metrics(text, video)
    similarity = torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(video, dim=-1).T
    write_examples(store, features, clips, similarity, spec.num_examples, spec.top_k, out_dir)
    return metrics


def write_examples(
    store: ArtifactStore,
    features: str,
    clips: list[HeldOutClip],
    similarity: torch.Tensor,
    count: int,
    top_k: int,
    out_dir: Path,
) -> None:
    """An HTML page: for the first `count` captions, the `top_k` clips the teacher ranks first, with a thumbnail
    of each clip's middle frame where the source video can be reached."""
    out_dir.mkdir(parents=True, exist_ok=True)
    thumbnails = Thumbnails(store, features, out_dir / "thumbs")
    sections = []
    for query in range(min(count, len(clips))):
        ranked = similarity[query].argsort(descending=True)[:top_k].tolist()
        cells = []
        for rank, index in enumerate(ranked, start=1):
            clip = clips[index]
            image = thumbnails.of(clip)
            picture = f'<img src="thumbs/{image}" width="160">' if image else "<i>video not reachable</i>"
            mark = " &#10003;" if index == query else ""
            cells.append(
                f"<td>{picture}<br>#{rank}{mark} {html.escape(clip.video_id)} {clip.start:.1f}-{clip.end:.1f}s"
                f"<br><small>{html.escape(clip.text)} ({similarity[query, index]:.3f})</small></td>"
            )
        sections.append(f"<h3>{html.escape(clips[query].text)}</h3><table><tr>{''.join(cells)}</tr></table>")
    page = "<html><head><meta charset='utf-8'><title>vlkd teacher retrieval</title></head><body>"
    page += "<h2>Text-to-video retrieval on held-out clips (&#10003; = the caption's own clip)</h2>"
    (out_dir / "index.html").write_text(page + "".join(sections) + "</body></html>", encoding="utf-8")


class Thumbnails:
    """Middle frames of clips, from the videos of the dataset the features were made from (when it is an
    artifact in the store; features from a URI dataset get no thumbnails)."""

    def __init__(self, store: ArtifactStore, features: str, directory: Path) -> None:
        self.directory = directory
        parents = store.manifest(features).parents
        dataset = next((p for p in parents if p.startswith("dataset/")), None)
        self.source = open_input(dataset, store) if dataset else None
        self.videos = (
            {Path(f.path).with_suffix("").as_posix(): f.path for f in self.source.files()} if self.source else {}
        )

    def of(self, clip: HeldOutClip) -> str | None:
        path = self.videos.get(clip.video_id)
        if path is None:
            return None
        name = f"{clip.video_id.replace('/', '_')}-{clip.start:.1f}.png"
        target = self.directory / name
        if not target.exists():
            import matplotlib.image

            from vlkd.data.video import SamplingPlan, decode_video

            with tempfile.TemporaryDirectory() as tmp:
                local = self.source.local_path(path) or self.source.fetch(path, Path(tmp) / Path(path).name)
                frames = decode_video(local, SamplingPlan(size_2d=160, size_3d=16, window=1)).frames_2d
            self.directory.mkdir(parents=True, exist_ok=True)
            middle = min(int((clip.start + clip.end) / 2), len(frames) - 1)
            matplotlib.image.imsave(target, frames[middle])
        return name
