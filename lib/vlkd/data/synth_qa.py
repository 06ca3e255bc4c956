"""Reading-comprehension and commonsense task files (SQuAD, SWAG, PIQA, TRACIE) from the synthetic world.

Each in its official release's format:
- SQuAD v1.1 / v2.0 (rajpurkar.github.io/SQuAD-explorer): `train-v1.1.json`, `dev-v1.1.json`, `train-v2.0.json`,
  `dev-v2.0.json` = `{"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"question", "id",
  "answers": [{"text", "answer_start"}]}]}]}]}`; v2.0 adds `is_impossible` to every question, and an impossible
  one has empty `answers` and a `plausible_answers` span.
- SWAG (rowanz/swagaf `data/`): `train.csv`, `val.csv` with a leading unnamed index column, then `video-id,
  fold-ind, startphrase, sent1, sent2, gold-source, ending0..ending3, label`; startphrase = sent1 + " " + sent2.
- PIQA (yonatanbisk.com/piqa): `train.jsonl` / `valid.jsonl` lines `{"id", "goal", "sol1", "sol2"}`, and
  `train-labels.lst` / `valid-labels.lst` with the index (0 or 1) of the right solution, one per line.
- TRACIE (allenai/tracie `data/iid/`): `tracie_train.txt`, `tracie_test.txt`, lines
  `event: <event> starts|ends before|after <anchor> story: <story>\tanswer: positive|negative`, each statement
  next to its flipped twin, as released. TRACIE has no dev split; its test file plays that role.
"""

from __future__ import annotations

import csv
import json
import random
import uuid
from pathlib import Path

from vlkd.data.synth_world import COLOURS, MOTION_PHRASES, MOTIONS, OUTCOMES, SHAPES, Actor, actor_phrase, balanced

SWAG_HEADER = ("", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source")
SWAG_HEADER += ("ending0", "ending1", "ending2", "ending3", "label")
_ORDER = ("First", "Then", "Finally")  # a story has at most three actors: one per shape
_REACHES = {
    "left": "reaches the left edge of the screen .",
    "right": "reaches the right edge of the screen .",
    "up": "reaches the top of the screen .",
    "down": "reaches the bottom of the screen .",
    "still": "stays in the same place .",
}
_PIQA_GOALS = {
    "left": "To get the {} to the left side of the screen, you can",
    "right": "To get the {} to the right side of the screen, you can",
    "up": "To lift the {} towards the top of the screen, you can",
    "down": "To lower the {} towards the bottom of the screen, you can",
    "still": "To keep the {} where it is, you can",
}
_PIQA_SOLUTIONS = {
    "left": "move it to the left.",
    "right": "move it to the right.",
    "up": "move it up.",
    "down": "move it down.",
    "still": "leave it alone.",
}
_DISPLACED = {motion: outcome.removesuffix(" than it started") for motion, outcome in OUTCOMES.items()}
_PER_ARTICLE = 5  # paragraphs per SQuAD article
_STATEMENTS = 8
"""TRACIE statements drawn per story, repeats dropped: 5.1 distinct on average, 10.2 lines with their flips"""


def _cast(rng: random.Random, count: int) -> list[Actor]:
    """Actors with distinct colours and shapes, so `the red one` or `the circle` names exactly one of them."""
    colours, shapes = rng.sample(list(COLOURS), count), rng.sample(SHAPES, count)
    return [Actor(c, s, rng.choice(list(MOTIONS)), 0.5, 0.5) for c, s in zip(colours, shapes, strict=True)]


def _passage(actors: list[Actor]) -> tuple[str, list[dict[str, int]]]:
    """`First , a red circle moves up . Then , ...` and, per actor, where its colour, shape and motion start."""
    text, spans = "", []
    for order, actor in zip(_ORDER, actors, strict=False):
        sentence = f"{order} , {actor_phrase(actor)} . "
        start = len(text) + sentence.index(f" {actor.colour} ") + 1
        shape = start + len(actor.colour) + 1
        spans.append({"colour": start, "shape": shape, "motion": shape + len(actor.shape) + 1})
        text += sentence
    return text.rstrip(), spans


def _qa(rng: random.Random, question: str, text: str, start: int, impossible: bool | None) -> dict:
    qa: dict = {"question": question, "id": f"{rng.getrandbits(96):024x}"}
    answer = [{"text": text, "answer_start": start}]
    qa["answers"] = [] if impossible else answer
    if impossible is not None:
        qa["is_impossible"] = impossible
    if impossible:
        qa["plausible_answers"] = answer
    return qa


def _paragraph(rng: random.Random, with_impossible: bool) -> dict:
    """One passage and its questions; `with_impossible` (v2.0) adds questions about an absent actor."""
    actors = _cast(rng, rng.randint(2, 3))
    context, spans = _passage(actors)
    flag = False if with_impossible else None
    qas = []
    for actor, span in zip(actors, spans, strict=True):
        motion = MOTION_PHRASES[actor.motion]
        asked = [
            (f"what colour is the {actor.shape} that {motion} ?", actor.colour, span["colour"]),
            (f"what shape is the {actor.colour} object ?", actor.shape, span["shape"]),
            (f"what does the {actor.colour} {actor.shape} do ?", motion, span["motion"]),
        ]
        qas += [_qa(rng, q, a, s, flag) for q, a, s in rng.sample(asked, rng.randint(1, 2))]
    if with_impossible:  # about a third of the questions, as in SQuAD 2.0's training set
        absent = [c for c in COLOURS if c not in {a.colour for a in actors}]
        for actor, span in rng.sample(list(zip(actors, spans, strict=True)), k=max(1, len(qas) // 2)):
            question = f"what does the {rng.choice(absent)} {actor.shape} do ?"
            qas.append(_qa(rng, question, MOTION_PHRASES[actor.motion], span["motion"], True))
    rng.shuffle(qas)
    return {"context": context, "qas": qas}


def _squad(rng: random.Random, questions: int, version: str) -> dict:
    paragraphs, asked = [], 0
    while asked < questions:
        paragraph = _paragraph(rng, with_impossible=version == "v2.0")
        paragraph["qas"] = paragraph["qas"][: questions - asked]
        asked += len(paragraph["qas"])
        paragraphs.append(paragraph)
    articles = [paragraphs[i : i + _PER_ARTICLE] for i in range(0, len(paragraphs), _PER_ARTICLE)]
    data = [{"title": f"Synthetic_scenes_{n}", "paragraphs": p} for n, p in enumerate(articles)]
    return {"data": data, "version": version}


def _write_squad(folder: Path, rng: random.Random, train: int, dev: int, version: str) -> dict[str, int]:
    suffix = version.lstrip("v")
    counts = {}
    for split, questions in (("train", train), ("dev", dev)):
        name = f"{split}-v{suffix}.json"
        (folder / name).write_text(json.dumps(_squad(rng, questions, version)))
        counts[name] = questions
    return counts


def write_squad_v1(folder: Path, rng: random.Random, train: int, dev: int) -> dict[str, int]:
    return _write_squad(folder, rng, train, dev, "1.1")


def write_squad_v2(folder: Path, rng: random.Random, train: int, dev: int) -> dict[str, int]:
    return _write_squad(folder, rng, train, dev, "v2.0")


def _swag_rows(rng: random.Random, count: int) -> list[list[str]]:
    """The gold ending is where the actor's motion leads; the distractors are where other motions lead."""
    rows = []
    for index, label in enumerate(balanced(rng, count, (0, 1, 2, 3))):
        actor = _cast(rng, 1)[0]
        sent1, sent2 = f"{actor_phrase(actor).capitalize()} .", f"The {actor.colour} {actor.shape}"
        endings = [_REACHES[m] for m in rng.sample([m for m in MOTIONS if m != actor.motion], 3)]
        endings.insert(label, _REACHES[actor.motion])
        video = f"synth_{index:05d}"
        rows.append([str(index), video, str(rng.randint(0, 20000)), f"{sent1} {sent2}", sent1, sent2, "gold"])
        rows[-1] += [*endings, str(label)]
    return rows


def write_swag(folder: Path, rng: random.Random, train: int, dev: int) -> dict[str, int]:
    counts = {}
    for name, count in (("train.csv", train), ("val.csv", dev)):
        with (folder / name).open("w", newline="") as f:  # pandas' to_csv layout: minimal quoting, \n endings
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(SWAG_HEADER)
            writer.writerows(_swag_rows(rng, count))
        counts[name] = count
    return counts


def write_piqa(folder: Path, rng: random.Random, train: int, dev: int) -> dict[str, int]:
    """The right solution moves the shape the way the goal needs; the wrong one moves it another way."""
    counts = {}
    for split, count in (("train", train), ("valid", dev)):
        lines, labels = [], balanced(rng, count, (0, 1))
        for label in labels:
            actor = _cast(rng, 1)[0]
            wrong = rng.choice([m for m in MOTIONS if m != actor.motion])
            solutions = [_PIQA_SOLUTIONS[wrong]]
            solutions.insert(label, _PIQA_SOLUTIONS[actor.motion])
            goal = _PIQA_GOALS[actor.motion].format(f"{actor.colour} {actor.shape}")
            example_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            lines.append(json.dumps({"id": example_id, "goal": goal, "sol1": solutions[0], "sol2": solutions[1]}))
        (folder / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))
        (folder / f"{split}-labels.lst").write_text("".join(f"{label}\n" for label in labels))
        counts[f"{split}.jsonl"] = count
    return counts


def _tracie_statement(rng: random.Random, actors: list[Actor]) -> tuple[str, str, str, str]:
    """(event, starts|ends, the true relation, anchor) for two of the story's actors, who act one after another.

    The event is an explicit action or an implicit state around it: a shape is at its starting point until its
    motion (that state ends there) and is displaced after it (that state starts there).
    """
    j, k = rng.sample(range(len(actors)), 2)
    actor, truth = actors[j], "after" if j > k else "before"
    the = f"the {actor.colour} {actor.shape}"
    statements = [(actor_phrase(actor, "the"), "starts")]
    if actor.motion != "still":
        statements += [(f"{the} is {_DISPLACED[actor.motion]}", "starts"), (f"{the} is at its starting point", "ends")]
    event, point = rng.choice(statements)
    return event, point, truth, actor_phrase(actors[k], "the")


def _tracie_lines(rng: random.Random, count: int) -> list[str]:
    """Statements, each followed by its flip, about stories that have several each, the pairs shuffled over the
    file: the released test file's 4,248 lines are about 342 stories (12.4 each), a story's pairs scattered."""
    pairs = []
    while 2 * len(pairs) < count:
        actors = _cast(rng, rng.randint(2, 3))
        story = " ".join(f"{order}, {actor_phrase(actor)}." for order, actor in zip(_ORDER, actors, strict=False))
        for event, point, truth, anchor in dict.fromkeys(_tracie_statement(rng, actors) for _ in range(_STATEMENTS)):
            flip = "before" if truth == "after" else "after"
            pairs.append(
                [
                    f"event: {event} {point} {relation} {anchor} story: {story}\tanswer: {answer}"
                    for relation, answer in ((truth, "positive"), (flip, "negative"))
                ]
            )
    rng.shuffle(pairs)
    return [line for pair in pairs for line in pair][:count]


def write_tracie(folder: Path, rng: random.Random, train: int, dev: int) -> dict[str, int]:
    counts = {}
    for name, count in (("tracie_train.txt", train), ("tracie_test.txt", dev)):
        (folder / name).write_text("".join(line + "\n" for line in _tracie_lines(rng, count)))
        counts[name] = count
    return counts
