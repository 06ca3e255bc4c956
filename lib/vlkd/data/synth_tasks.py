"""Small downstream task files in each task's official file format, built from the synthetic world.

A reader written for the official release reads these unchanged: same file names, columns, column order and
label vocabularies. The labels follow from the text (sentiment from the adverb, entailment from consistent or
inconsistent descriptions, answers from the passage), so a tiny finetuned model beats chance.

GLUE files as `download_glue_data.py` unpacks them (TSV, one header line, no quoting, so no field holds a tab
or newline):
- SST-2 `train.tsv`, `dev.tsv`: `sentence, label` with label 0 (negative) / 1 (positive).
- QNLI: `index, question, sentence, label` with label entailment / not_entailment.
- QQP: `id, qid1, qid2, question1, question2, is_duplicate` with is_duplicate 0 / 1.
- MNLI `train.tsv` (12 columns: `index, promptID, pairID, genre, sentence1_binary_parse, sentence2_binary_parse,
  sentence1_parse, sentence2_parse, sentence1, sentence2, label1, gold_label`) and `dev_matched.tsv`,
  `dev_mismatched.tsv` (16 columns: `label1` .. `label5` before `gold_label`); labels entailment / neutral /
  contradiction; pairID is promptID plus the label's initial; mismatched genres differ from matched ones.
- GLUE diagnostic `diagnostic-full.tsv`: `Lexical Semantics, Predicate-Argument Structure, Logic, Knowledge,
  Domain, Premise, Hypothesis, Label`; a category cell holds fine-grained tags (`;`-separated) or is empty.
The reading-comprehension and commonsense tasks are in `synth_qa`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from vlkd.data.synth_qa import write_piqa, write_squad_v1, write_squad_v2, write_swag, write_tracie
from vlkd.data.synth_world import (
    COLOURS,
    CORNERS,
    MOTION_PHRASES,
    MOTIONS,
    OUTCOMES,
    Actor,
    actor_phrase,
    balanced,
    describe_actors,
    indefinite,
    sample_actor,
    sample_actors,
)

TaskWriter = Callable[[Path, random.Random, int, int], dict[str, int]]
"""(task folder, rng, train examples, dev examples) -> examples written per file name."""

NLI_LABELS = ("entailment", "neutral", "contradiction")
MNLI_MATCHED_GENRES = ("fiction", "government", "slate", "telephone", "travel")
MNLI_MISMATCHED_GENRES = ("facetoface", "letters", "nineeleven", "oup", "verbatim")
DIAGNOSTIC_HEADER = (
    "Lexical Semantics",
    "Predicate-Argument Structure",
    "Logic",
    "Knowledge",
    "Domain",
    "Premise",
    "Hypothesis",
    "Label",
)
_MNLI_HEAD = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse")
_MNLI_HEAD += ("sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
_POSITIVE = ("gracefully", "smoothly", "beautifully", "elegantly", "delightfully")
_NEGATIVE = ("clumsily", "awkwardly", "sluggishly", "painfully", "sloppily")
_ASK_MOTION = ("what does the {} do ?", "how does the {} move ?", "where does the {} go ?", "where is the {} moving ?")
_MATERIALS = ("paper", "wood", "glass", "metal")
_TAGS = {
    **dict.fromkeys(("a", "the", "no"), "DT"),
    **dict.fromkeys(("is", "moves", "stays"), "VBZ"),
    **dict.fromkeys(("up", "down", "still"), "RB"),
    **dict.fromkeys(COLOURS, "JJ"),
    **{"and": "CC", "there": "EX", "to": "TO", "of": "IN", "made": "VBN", ".": "."},
}


def write_tsv(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> int:
    """GLUE's TSV: unquoted fields, so one with a tab or newline would shift every later column."""
    for row in rows:
        if len(row) != len(header) or any("\t" in f or "\n" in f for f in row):
            raise ValueError(f"{path.name}: bad row {row!r} for columns {header}")
    path.write_text("".join("\t".join(fields) + "\n" for fields in [list(header), *rows]))
    return len(rows)


def _glue_splits(train: int, dev: int) -> list[tuple[str, int]]:
    return [("train.tsv", train), ("dev.tsv", dev)]


def _other(rng: random.Random, actor: Actor) -> Actor:
    """A hard negative: shares the colour or the shape with `actor`, never both."""
    while True:
        other = sample_actor(rng)
        if (other.colour == actor.colour) != (other.shape == actor.shape):
            return other


def _base(motion: str) -> str:
    """`move to the left`: the bare verb phrase, for `does not ...` and plural subjects."""
    verb, _, rest = MOTION_PHRASES[motion].partition(" ")
    return f"{verb[:-1]} {rest}"


def _sst2_rows(rng: random.Random, count: int) -> list[list[str]]:
    rows = []
    for label in balanced(rng, count, (0, 1)):
        adverb = rng.choice(_POSITIVE if label else _NEGATIVE)
        rows.append([f"{actor_phrase(sample_actor(rng))} {adverb} .", str(label)])
    return rows


def write_sst2(folder: Path, rng: random.Random, train: int, dev: int) -> dict[str, int]:
    header = ("sentence", "label")
    return {name: write_tsv(folder / name, header, _sst2_rows(rng, n)) for name, n in _glue_splits(train, dev)}


def _qnli_rows(rng: random.Random, count: int) -> list[list[str]]:
    rows = []
    for index, label in enumerate(balanced(rng, count, ("entailment", "not_entailment"))):
        target = sample_actor(rng)
        question = rng.choice(_ASK_MOTION).format(f"{target.colour} {target.shape}")
        shown = [target if label == "entailment" else _other(rng, target)]
        if rng.random() < 0.5:
            shown.insert(rng.randint(0, 1), _other(rng, target))
        rows.append([str(index), question, f"in this clip , {describe_actors(tuple(shown))} .", label])
    return rows


def write_qnli(folder: Path, rng: random.Random, train: int, dev: int) -> dict[str, int]:
    header = ("index", "question", "sentence", "label")
    return {name: write_tsv(folder / name, header, _qnli_rows(rng, n)) for name, n in _glue_splits(train, dev)}


def _qqp_rows(rng: random.Random, count: int) -> list[list[str]]:
    rows = []
    for index, duplicate in enumerate(balanced(rng, count, (0, 1))):
        target = sample_actor(rng)
        asked = target if duplicate else _other(rng, target)
        first, second = rng.sample(_ASK_MOTION, 2)  # paraphrases either way, so wording never gives the label away
        q1, q2 = first.format(f"{target.colour} {target.shape}"), second.format(f"{asked.colour} {asked.shape}")
        rows.append([str(index), str(2 * index + 1), str(2 * index + 2), q1, q2, str(duplicate)])
    return rows


def write_qqp(folder: Path, rng: random.Random, train: int, dev: int) -> dict[str, int]:
    header = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
    return {name: write_tsv(folder / name, header, _qqp_rows(rng, n)) for name, n in _glue_splits(train, dev)}


def _hypernym(actor: Actor) -> str:
    """`a red shape moves up`: what `a red circle moves up` entails."""
    return f"{indefinite(actor.colour + ' shape')} {MOTION_PHRASES[actor.motion]}"


def nli_pair(rng: random.Random, label: str) -> tuple[str, str]:
    """(premise, hypothesis) about one or two actors whose relation is `label`."""
    actors = sample_actors(rng, two=0.5)
    actor = rng.choice(actors)
    named = f"{actor.colour} {actor.shape}"
    if label == "entailment":
        options = [_hypernym(actor), f"there is {indefinite(named)}"]
    elif label == "contradiction":
        other = rng.choice([m for m in MOTIONS if m != actor.motion])
        options = [actor_phrase(replace(actor, motion=other), "the"), f"there is no {named}"]
    else:
        unseen = sample_actor(rng, exclude_colours=tuple(a.colour for a in actors))
        options = [actor_phrase(unseen), f"the {named} is made of {rng.choice(_MATERIALS)}"]
    return f"{describe_actors(actors)} .", f"{rng.choice(options)} ."


def _binary_parse(tokens: list[str]) -> str:
    """Right-branching bracketing in MNLI's `( a ( b c ) )` notation."""
    if len(tokens) <= 2:
        return tokens[0] if len(tokens) == 1 else f"( {tokens[0]} {tokens[1]} )"
    return f"( {tokens[0]} {_binary_parse(tokens[1:])} )"


def _parse(tokens: list[str]) -> str:
    """A flat Penn-style parse, `(ROOT (S (DT a) (JJ red) ...))`, tagged from the world's small vocabulary."""
    return "(ROOT (S " + " ".join(f"({_TAGS.get(t, 'NN')} {t})" for t in tokens) + "))"


def _mnli_rows(rng: random.Random, count: int, genres: tuple[str, ...], votes: int) -> list[list[str]]:
    rows = []
    for index, label in enumerate(balanced(rng, count, NLI_LABELS)):
        premise, hypothesis = nli_pair(rng, label)
        prompt = str(rng.randint(10000, 199999))
        one, two = premise.split(), hypothesis.split()
        parses = [_binary_parse(one[:-1]) + " .", _binary_parse(two[:-1]) + " .", _parse(one), _parse(two)]
        head = [str(index), prompt, prompt + label[0], rng.choice(genres), *parses, premise, hypothesis]
        rows.append(head + [label] * (votes + 1))  # every annotator agrees with the gold label
    return rows


def write_mnli(folder: Path, rng: random.Random, train: int, dev: int) -> dict[str, int]:
    labels = tuple(f"label{i}" for i in range(1, 6))
    splits = [
        ("train.tsv", train, MNLI_MATCHED_GENRES, 1),
        ("dev_matched.tsv", dev, MNLI_MATCHED_GENRES, 5),
        ("dev_mismatched.tsv", dev, MNLI_MISMATCHED_GENRES, 5),
    ]
    return {
        name: write_tsv(folder / name, (*_MNLI_HEAD, *labels[:votes], "gold_label"), _mnli_rows(rng, n, genres, votes))
        for name, n, genres, votes in splits
    }


Phenomenon = Callable[[random.Random, Actor, str, bool], tuple[str, str, str, str]]
"""(rng, actor, another motion, whether the hypothesis should hold) -> (premise, hypothesis, label, the label with
premise and hypothesis swapped)."""


def _lexical_entailment(rng: random.Random, actor: Actor, other: str, holds: bool) -> tuple[str, str, str, str]:
    """A circle is a shape, not the other way round: the reverse direction is neutral."""
    seen, general = actor_phrase(actor), _hypernym(actor)
    return (seen, general, "entailment", "neutral") if holds else (general, seen, "neutral", "entailment")


def _negation(rng: random.Random, actor: Actor, other: str, holds: bool) -> tuple[str, str, str, str]:
    denied = _base(other if holds else actor.motion)
    return actor_phrase(actor), f"the {actor.colour} {actor.shape} does not {denied}", *_nli(holds)


def _coordination(rng: random.Random, actor: Actor, other: str, holds: bool) -> tuple[str, str, str, str]:
    partner = sample_actor(rng, exclude_colours=(actor.colour,))
    both = f"{indefinite(f'{partner.colour} {partner.shape}')} and {indefinite(f'{actor.colour} {actor.shape}')}"
    claimed = replace(actor, motion=actor.motion if holds else other)
    return f"{both} {_base(actor.motion)}", actor_phrase(claimed), *_nli(holds)


def _common_sense(rng: random.Random, actor: Actor, other: str, holds: bool) -> tuple[str, str, str, str]:
    outcome = OUTCOMES[actor.motion if holds else other]
    return actor_phrase(actor), f"the {actor.colour} {actor.shape} ends {outcome}", *_nli(holds)


def _world_knowledge(rng: random.Random, actor: Actor, other: str, holds: bool) -> tuple[str, str, str, str]:
    shape = actor.shape if holds else rng.choice([s for s in CORNERS if s != actor.shape])
    hypothesis = f"a shape with {CORNERS[shape]} {MOTION_PHRASES[actor.motion]}"
    return actor_phrase(actor), hypothesis, "entailment" if holds else "neutral", "neutral"


def _nli(holds: bool) -> tuple[str, str]:
    """An entailed claim that says less than the premise (one motion ruled out, one of two actors, an outcome),
    whose reverse is neutral; or a contradiction, both ways."""
    return ("entailment", "neutral") if holds else ("contradiction", "contradiction")


# (category column, fine-grained tag as GLUE spells it) -> how to make an example of it.
PHENOMENA: dict[tuple[str, str], Phenomenon] = {
    ("Lexical Semantics", "Lexical entailment"): _lexical_entailment,
    ("Logic", "Negation"): _negation,
    ("Predicate-Argument Structure", "Coordination scope"): _coordination,
    ("Knowledge", "Common sense"): _common_sense,
    ("Knowledge", "World knowledge"): _world_knowledge,
}


def write_glue_diagnostic(folder: Path, rng: random.Random, train: int, dev: int) -> dict[str, int]:
    """GLUE's diagnostic set is evaluation-only (scored with the MNLI model), so it has no train split. Like
    `diagnostic-full.tsv`, it asks each sentence pair both ways, the reverse on the next row (an odd `dev` cuts the
    last pair's), and every phenomenon comes up (as often as the others, up to one) once there are enough pairs."""
    rows = []
    for column, tag in balanced(rng, (dev + 1) // 2, tuple(PHENOMENA)):
        make = PHENOMENA[column, tag]
        actor = sample_actor(rng)
        other = rng.choice([m for m in MOTIONS if m != actor.motion])
        premise, hypothesis, label, reverse = make(rng, actor, other, rng.random() < 0.5)
        categories = [tag if name == column else "" for name in DIAGNOSTIC_HEADER[:4]]
        rows.append([*categories, "Artificial", f"{premise} .", f"{hypothesis} .", label])
        rows.append([*categories, "Artificial", f"{hypothesis} .", f"{premise} .", reverse])
    return {"diagnostic-full.tsv": write_tsv(folder / "diagnostic-full.tsv", DIAGNOSTIC_HEADER, rows[:dev])}


WRITERS: dict[str, TaskWriter] = {
    "sst2": write_sst2,
    "qnli": write_qnli,
    "qqp": write_qqp,
    "mnli": write_mnli,
    "glue_diagnostic": write_glue_diagnostic,
    "squad_v1": write_squad_v1,
    "squad_v2": write_squad_v2,
    "swag": write_swag,
    "piqa": write_piqa,
    "tracie": write_tracie,
}
TASKS: tuple[str, ...] = tuple(WRITERS)


def write_tasks(root: Path, seed: int, train: int, dev: int) -> dict[str, dict[str, int]]:
    """Write every task under `root/<task>/`; each task has its own random stream, so tasks never shift each other."""
    counts = {}
    for name, writer in WRITERS.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        counts[name] = writer(folder, random.Random(f"vlkd-synth:{seed}:task:{name}"), train, dev)
    return counts
