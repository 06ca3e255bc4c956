"""Text-to-video retrieval of a teacher (R@1/5/10, median rank): the one measure the teacher stage validates with
and the eval stage reports, and a page of example queries with their top retrieved clips (the paper's
visualisation of learned grounding).

The eval stage scores the very held-out clips the teacher stage validated on (`vlkd.data.clips.held_out`, by the
teacher's own spec), with the frames validation gives the teacher (`clip_features`), so its numbers are the
held-out numbers of the teacher's manifest, recomputed, plus the examples.
"""

from __future__ import annotations

import html
import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
import torch.nn.functional as F

from vlkd.artifacts import ArtifactStore
from vlkd.data import features as fmt
from vlkd.data.caption_tokens import CaptionTokens
from vlkd.data.clips import features_info, frames_of, held_out
from vlkd.data.corpus import pad_sequences
from vlkd.errors import DataError
from vlkd.inputs import open_input
from vlkd.losses import mean_pool
from vlkd.retrieval_metrics import ranking_metrics
from vlkd.specs import RetrievalSpec, TeacherSpec
from vlkd.specs.teacher import trained_with

BATCH = 64
MAX_QUERIES = 10_000
"""the clips a retrieval ranks at most (the first ones): bounds the [N, N] similarity and the memory it needs"""


@torch.no_grad()
def embed(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A teacher's representations of a batch of captions (`input_ids`, `attention_mask` [B, L]) and their clips
    (`features` [B, T, F], `frame_mask` [B, T]): text [B, H], the mean of each caption's token states h^x, and
    video [B, H], V^T's; fp32 on the CPU."""
    states = model.text_states(batch["input_ids"], batch["attention_mask"])
    text = mean_pool(states, batch["attention_mask"].bool())
    video = model.video_encoder(batch["features"], batch["frame_mask"])[1]
    return text.float().cpu(), video.float().cpu()


class Retrieval:
    """Text-to-video retrieval of `model` over clips that come a batch at a time: query i is caption i, its correct
    video is clip i, videos ranked by the cosine of the representations (`embed`)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.texts: list[torch.Tensor] = []
        self.videos: list[torch.Tensor] = []
        self.count = 0

    def add(self, batch: dict[str, torch.Tensor]) -> None:
        """Embed a batch; clips past the first MAX_QUERIES are left out."""
        room = MAX_QUERIES - self.count
        if room <= 0:
            return
        text, video = embed(self.model, batch)
        self.texts.append(text[:room])
        self.videos.append(video[:room])
        self.count += len(self.texts[-1])

    def similarity(self) -> torch.Tensor:
        """[N, N]: the cosine of caption i's and clip j's representations."""
        return F.normalize(torch.cat(self.texts), dim=-1) @ F.normalize(torch.cat(self.videos), dim=-1).T

    def metrics(self) -> dict[str, float]:
        """{"r1", "r5", "r10" (percent), "median_rank", "queries"}."""
        return ranking_metrics(self.similarity())


@dataclass
class HeldOutClip:
    """A held-out clip as the examples page shows it."""

    video_id: str
    start: float
    end: float
    text: str


def held_out_batches(
    store: ArtifactStore, teacher: TeacherSpec, features: str, tokenizer: Any, width: int
) -> Iterator[tuple[list[HeldOutClip], dict[str, torch.Tensor]]]:
    """The clips `teacher` validated on, BATCH at a time: what the page shows of each, and the teacher's inputs
    (captions tokenised and padded as the teacher's training reads them, `CaptionTokens` and `pad_sequences`; the
    first `width` columns of each frame, as `frames_of` gives them)."""
    source = open_input(features, store)
    info = features_info(source)
    validation = held_out(source, info, teacher.train.val_size, teacher.seed)
    if not validation.videos:
        raise DataError(f"the teacher held out no clips (train.val_size: 0): nothing to retrieve from {features}")
    clips = (
        clip
        for path in validation.shards
        for clip in fmt.read_clips(source.read_bytes(path), info.feature_dim)
        if clip.video_id in validation.videos
    )
    captions = CaptionTokens(tokenizer, teacher.max_text_len)
    while chunk := list(itertools.islice(clips, BATCH)):
        tokens = captions(pa.table({"text": [c.text for c in chunk]})).column("input_ids")
        ids, attention = pad_sequences(tokens, tokenizer.pad_token_id, teacher.max_text_len)
        middle_frame = teacher.visual_input == "middle_frame"
        frames, mask = frames_of([c.features for c in chunk], teacher.max_frames, width, middle_frame)
        batch = {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(attention),
            "features": torch.from_numpy(frames),
            "frame_mask": torch.from_numpy(mask),
        }
        yield [HeldOutClip(c.video_id, c.start, c.end, c.text) for c in chunk], batch


def teacher_retrieval(store: ArtifactStore, spec: RetrievalSpec, out_dir: Path) -> dict[str, float]:
    """Retrieval metrics of `spec.teacher` on its held-out clips; writes `out_dir/index.html` and thumbnails."""
    from transformers import BertTokenizerFast

    from vlkd.models.bert import LANGUAGE_MODEL
    from vlkd.models.teacher import Teacher

    manifest = store.manifest(spec.teacher)
    teacher_spec = trained_with(manifest)
    features = (
        str(store.resolve(spec.features))
        if spec.features
        else next(p for p in manifest.parents if p.startswith("features/"))
    )
    with tempfile.TemporaryDirectory(prefix="vlkd-retrieval-") as tmp:
        store.fetch(manifest.ref, Path(tmp))
        model = Teacher.load(Path(tmp)).eval()
        tokenizer = BertTokenizerFast.from_pretrained(Path(tmp) / LANGUAGE_MODEL, local_files_only=True)
    retrieval, clips = Retrieval(model), []
    width = model.video_encoder.feature_dim
    for shown, batch in held_out_batches(store, teacher_spec, features, tokenizer, width):
        retrieval.add(batch)
        clips += shown
        if retrieval.count == MAX_QUERIES:
            break
    similarity = retrieval.similarity()
    write_examples(store, features, clips[: retrieval.count], similarity, spec.num_examples, spec.top_k, out_dir)
    return ranking_metrics(similarity)


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

            from vlkd.data.video import SamplingPlan, frame_at

            with tempfile.TemporaryDirectory() as tmp:
                local = self.source.local_path(path) or self.source.fetch(path, Path(tmp) / Path(path).name)
                plan = SamplingPlan(size_2d=160, size_3d=16, window=1)
                frame = frame_at(local, plan, int((clip.start + clip.end) / 2))
            self.directory.mkdir(parents=True, exist_ok=True)
            matplotlib.image.imsave(target, frame)
        return name
