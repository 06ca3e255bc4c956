"""The text stage's steps on real files: Wiki103 lines, a WordPiece tokenizer trained here, packing, token shards."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer, BertTokenizerFast

from vlkd.data.text import (
    ALPHABET_SIZE,
    caption_paragraphs,
    corpus_lines,
    load_rust_tokenizer,
    load_vocab_tokenizer,
    pack_sequences,
    read_index,
    read_shards,
    save_tokenizer,
    tokenize_lines,
    train_tokenizer,
    write_shards,
)
from vlkd.errors import NotFoundError

CLS, SEP = 2, 3


def synthetic_corpus(lines: int, seed: int = 0) -> list[str]:
    """Sentences over 300 invented words (two or three syllables), some capitalised, with punctuation."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ren", "sto", "va", "pel", "tri", "dor", "su", "an", "bex"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.choice((2, 3)))) for _ in range(300)]
    sentences = []
    for _ in range(lines):
        sentence = [rng.choice(words) for _ in range(rng.randint(5, 15))]
        sentence[0] = sentence[0].capitalize()
        sentences.append(" ".join(sentence) + rng.choice([" .", " , and more .", " ?"]))
    return sentences


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizerFast:
    return train_tokenizer(lambda: synthetic_corpus(400), vocab_size=200, min_frequency=2, lowercase=True)


# Corpus lines


def test_titles_section_headers_and_blank_lines_are_dropped():
    wiki103 = [
        " \n",
        " = Valkyria Chronicles III = \n",
        " \n",
        " Senjō no Valkyria 3 is a tactical role playing game . \n",
        " = = Gameplay = = \n",
        " = = = Plot = = = \n",
        "\n",
        " The game began development in 2010 . \n",
    ]
    assert list(corpus_lines(wiki103)) == [
        "Senjō no Valkyria 3 is a tactical role playing game .",
        "The game began development in 2010 .",
    ]


def test_lines_that_only_contain_equals_signs_inside_are_kept():
    assert list(corpus_lines(["a = b , so b = a .", "= not a header"])) == ["a = b , so b = a .", "= not a header"]


def test_wiki103_split_markers_are_joined_back():
    line = " a state @-@ of @-@ the @-@ art system for 1 @,@ 000 users at 3 @.@ 5 GHz "
    assert list(corpus_lines([line])) == ["a state-of-the-art system for 1,000 users at 3.5 GHz"]


# Captions


def caption_line(video_id: str, start: float, text: str) -> str:
    return json.dumps({"video_id": video_id, "start": start, "end": start + 2.5, "text": text}) + "\n"


def test_each_videos_captions_make_one_paragraph_in_time_order():
    lines = [
        caption_line("v1", 4.0, "then fold it"),
        caption_line("v1", 0.5, "um so first"),
        caption_line("v1", 2.0, "take the paper"),
        caption_line("v2", 1.0, "alright welcome back"),
    ]
    assert list(caption_paragraphs(lines)) == ["um so first take the paper then fold it", "alright welcome back"]


def test_a_video_whose_captions_are_not_contiguous_gives_a_paragraph_per_run():
    lines = [caption_line("v1", 0.0, "a"), caption_line("v2", 0.0, "b"), caption_line("v1", 3.0, "c")]
    assert list(caption_paragraphs(lines)) == ["a", "b", "c"]


def test_caption_paragraphs_hold_one_video_at_a_time():
    read = []

    def lines():
        for video in range(1000):
            for second in range(3):
                read.append(video)
                yield caption_line(f"v{video}", second, f"video {video} caption {second}")

    paragraphs = caption_paragraphs(lines())
    assert next(paragraphs) == "video 0 caption 0 video 0 caption 1 video 0 caption 2"
    assert read == [0, 0, 0, 1]  # the next video's first line ends the paragraph; the rest is not read yet


def test_lines_preprocess_would_skip_are_skipped_with_one_warning(caplog):
    lines = [
        caption_line("v1", 0.0, "first"),
        "not json\n",
        "\n",
        json.dumps({"video_id": "v1", "start": 3.0, "end": 3.0, "text": "no time"}) + "\n",
        caption_line("v1", 5.0, "   "),
        caption_line("v1", 6.0, "last"),
    ]
    with caplog.at_level("WARNING", logger="vlkd.text"):
        assert list(caption_paragraphs(lines)) == ["first last"]
    (warning,) = caplog.messages
    assert warning.startswith("3 caption lines are no usable caption and were skipped; the first, line 2: not a")


# Tokenizer


def test_trained_vocabulary_has_the_requested_size(tokenizer):
    assert len(tokenizer) == 200


def test_a_corpus_with_few_pieces_gives_a_smaller_vocabulary():
    small = train_tokenizer(lambda: ["the cat sat on the mat ."] * 10, vocab_size=5000, min_frequency=2, lowercase=True)
    assert len(small) < 5000
    assert small.convert_ids_to_tokens(small("the cat sat", add_special_tokens=False)["input_ids"]) == [
        "the",
        "cat",
        "sat",
    ]


def test_a_vocab_size_below_the_alphabet_is_an_error():
    with pytest.raises(ValueError, match=r"set tokenizer.vocab_size to at least \d+"):
        train_tokenizer(lambda: synthetic_corpus(50), vocab_size=10, min_frequency=2, lowercase=True)


def test_the_same_corpus_trains_the_same_tokenizer():
    """`tokenizers` alone gave a different vocabulary on every training (huggingface/tokenizers#1794). This corpus
    ties everything it can: 165 more letters than the alphabet keeps (Yi syllables, which BERT's normaliser leaves
    as they are), each once in each place of a three-letter word, so every letter and continuation is as frequent."""
    letters = [chr(0xA000 + i) for i in range(ALPHABET_SIZE + 165)]
    n = len(letters)
    words = [letters[i] + letters[(7 * i + 1) % n] + letters[(13 * i + 2) % n] for i in range(n)]
    corpus = [" ".join(words[i : i + 10]) for i in range(0, n, 10)]
    first, *again = (train_tokenizer(lambda: corpus, 2200, 1, True).get_vocab() for _ in range(3))
    assert all(vocab == first for vocab in again)
    assert letters[ALPHABET_SIZE - 1] in first and letters[ALPHABET_SIZE] not in first  # ties by code point
    assert f"##{letters[0]}" in first


def test_an_empty_corpus_is_an_error():
    with pytest.raises(ValueError, match="no text"):
        train_tokenizer(list, vocab_size=100, min_frequency=1, lowercase=True)


def test_special_tokens_come_first_with_pad_at_zero_as_in_bert(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id) == (0, CLS, SEP)
    ids = tokenizer("kalo mi")["input_ids"]
    assert ids[0] == CLS and ids[-1] == SEP


def test_trained_tokenizer_lowercases(tokenizer):
    text = synthetic_corpus(1, seed=7)[0]
    assert tokenizer(text.upper())["input_ids"] == tokenizer(text.lower())["input_ids"]


def test_saved_tokenizer_loads_offline_and_round_trips(tokenizer, tmp_path):
    save_tokenizer(tokenizer, tmp_path / "tok")
    loaded = BertTokenizerFast.from_pretrained(tmp_path / "tok", local_files_only=True)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert AutoTokenizer.from_pretrained(tmp_path / "tok", local_files_only=True).get_vocab() == tokenizer.get_vocab()
    text = " ".join(word for word in synthetic_corpus(3, seed=1)[2].split() if word.isalpha())
    ids = loaded(text)["input_ids"]
    assert ids == tokenizer(text)["input_ids"] and 1 not in ids  # no [UNK]: every word is in the corpus
    assert loaded.decode(ids, skip_special_tokens=True) == text.lower()


def test_saved_vocab_txt_rebuilds_the_same_tokenizer(tokenizer, tmp_path):
    save_tokenizer(tokenizer, tmp_path / "tok")
    again = load_vocab_tokenizer(tmp_path / "tok" / "vocab.txt", lowercase=True)
    assert again.get_vocab() == tokenizer.get_vocab()


def bert_like_vocab(path: Path) -> Path:
    """bert-base-uncased's layout: [PAD], [unused0-98], [UNK] [CLS] [SEP] [MASK] at 100-103, then words."""
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += ["the", "river", "flows", "north", "##ward", ".", "cafe"]
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


def test_a_given_vocab_file_keeps_its_ids(tmp_path):
    loaded = load_vocab_tokenizer(bert_like_vocab(tmp_path / "vocab.txt"), lowercase=True)
    assert len(loaded) == 111
    assert (loaded.pad_token_id, loaded.unk_token_id, loaded.cls_token_id, loaded.sep_token_id) == (0, 100, 101, 102)
    tokens = loaded.convert_ids_to_tokens(loaded("The River flows Northward. Café zebra")["input_ids"])
    assert tokens == ["[CLS]", "the", "river", "flows", "north", "##ward", ".", "cafe", "[UNK]", "[SEP]"]


def test_a_vocab_file_without_bert_special_tokens_is_an_error(tmp_path):
    (tmp_path / "vocab.txt").write_text("hello\nworld\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lacks BERT's special tokens \[PAD\], \[UNK\]"):
        load_vocab_tokenizer(tmp_path / "vocab.txt", lowercase=True)


def test_tokenize_lines_gives_ids_without_special_tokens(tokenizer):
    lines = synthetic_corpus(5, seed=3)
    ids = tokenize_lines(tokenizer.backend_tokenizer, lines)
    assert ids == [tokenizer(line, add_special_tokens=False)["input_ids"] for line in lines]
    assert all(CLS not in seq and SEP not in seq for seq in ids)


def test_a_saved_tokenizers_rust_tokenizer_tokenises_as_transformers_loads_it(tokenizer, tmp_path):
    """The text stage's read tasks load tokenizer.json alone (no transformers): the same ids, untruncated and
    unpadded even when the tokenizer was last called with padding and truncation."""
    tokenizer(["a b", "a"], padding=True, truncation=True, max_length=4)  # settings its Rust tokenizer then holds
    save_tokenizer(tokenizer, tmp_path)
    lines = synthetic_corpus(5, seed=4)
    lines.append(" ".join(lines))  # longer than any max_length above
    loaded = BertTokenizerFast.from_pretrained(tmp_path)
    expected = [loaded(line, add_special_tokens=False)["input_ids"] for line in lines]
    assert tokenize_lines(load_rust_tokenizer(tmp_path), lines) == expected
    assert len(expected[-1]) > 100


# Packing


def random_paragraphs(count: int, longest: int, seed: int = 0) -> list[list[int]]:
    """Token ids 10, 11, 12, ... in order, cut into paragraphs of 0..longest tokens."""
    rng = random.Random(seed)
    paragraphs, next_id = [], 10
    for _ in range(count):
        size = rng.randint(0, longest)
        paragraphs.append(list(range(next_id, next_id + size)))
        next_id += size
    return paragraphs


@pytest.mark.parametrize("pack", [True, False])
def test_every_sequence_is_cls_tokens_sep_within_max_len(pack):
    sequences = list(pack_sequences(random_paragraphs(300, 40), 16, CLS, SEP, pack))
    assert sequences
    assert all(s[0] == CLS and s[-1] == SEP and 3 <= len(s) <= 16 for s in sequences)


def test_packing_keeps_every_token_in_order():
    paragraphs = random_paragraphs(300, 40)
    sequences = pack_sequences(paragraphs, 16, CLS, SEP, pack=True)
    assert [t for s in sequences for t in s[1:-1]] == [t for p in paragraphs for t in p]


def test_packing_fills_a_sequence_until_the_next_paragraph_would_not_fit():
    paragraphs = [[10] * 3, [11] * 3, [12] * 3, [13] * 6]
    assert [s[1:-1] for s in pack_sequences(paragraphs, 8, CLS, SEP, pack=True)] == [
        [10, 10, 10, 11, 11, 11],
        [12, 12, 12],
        [13] * 6,
    ]


def test_a_paragraph_longer_than_a_sequence_is_split_and_its_remainder_packed_with_the_next():
    paragraphs = [[1, 2], list(range(10, 20)), [30, 31]]
    assert [s[1:-1] for s in pack_sequences(paragraphs, 6, CLS, SEP, pack=True)] == [
        [1, 2],
        [10, 11, 12, 13],
        [14, 15, 16, 17],
        [18, 19, 30, 31],
    ]


def test_without_packing_each_paragraph_is_one_truncated_sequence():
    paragraphs = [list(range(10, 30)), [40, 41], [], [50]]
    assert list(pack_sequences(paragraphs, 8, CLS, SEP, pack=False)) == [
        [CLS, 10, 11, 12, 13, 14, 15, SEP],
        [CLS, 40, 41, SEP],
        [CLS, 50, SEP],
    ]


@pytest.mark.parametrize("pack", [True, False])
def test_empty_paragraphs_never_make_an_empty_sequence(pack):
    assert list(pack_sequences([[], [], []], 8, CLS, SEP, pack)) == []


def test_max_len_must_leave_room_for_a_token():
    with pytest.raises(ValueError, match="max_len=2"):
        pack_sequences([[1]], 2, CLS, SEP, pack=True)


# Token shards


def numbered_sequences(count: int, seed: int = 0) -> list[list[int]]:
    """Distinct sequences: sequence i is [CLS, i, ..., SEP] with 1-14 inner tokens."""
    rng = random.Random(seed)
    return [[CLS, 1000 + i, *([7] * rng.randint(0, 13)), SEP] for i in range(count)]


def test_split_counts_add_up_and_validation_size_is_exact(tmp_path):
    sequences = numbered_sequences(100)
    index = write_shards(iter(sequences), tmp_path / "corpus", shard_size=7, val_size=12, seed=0, max_len=16)
    train, validation = index["splits"]["train"], index["splits"]["validation"]
    assert (train["sequences"], validation["sequences"]) == (88, 12)
    assert train["tokens"] + validation["tokens"] == sum(len(s) for s in sequences)
    assert [s["sequences"] for s in train["shards"]] == [7] * 12 + [4]
    assert [s["sequences"] for s in validation["shards"]] == [7, 5]


def test_index_json_matches_the_shard_files(tmp_path):
    out = tmp_path / "corpus"
    index = write_shards(numbered_sequences(60), out, shard_size=25, val_size=10, seed=3, max_len=16)
    assert json.loads((out / "index.json").read_text()) == index == read_index(out)
    assert index["max_len"] == 16 and index["format"] == "vlkd.corpus/v1"
    listed = {s["path"] for split in index["splits"].values() for s in split["shards"]}
    assert listed == {str(p.relative_to(out)) for p in out.rglob("*.parquet")}
    for split in index["splits"].values():
        for shard in split["shards"]:
            table = pq.read_table(out / shard["path"])
            assert str(table.schema.field("input_ids").type) == "list<element: int32>"
            assert table.num_rows == shard["sequences"]
            assert sum(table.column("length").to_pylist()) == shard["tokens"]
            assert [len(ids) for ids in table.column("input_ids").to_pylist()] == table.column("length").to_pylist()


def test_read_shards_returns_what_was_written(tmp_path):
    sequences = numbered_sequences(80)
    write_shards(sequences, tmp_path / "corpus", shard_size=9, val_size=15, seed=1, max_len=16)
    train = list(read_shards(tmp_path / "corpus", "train"))
    validation = list(read_shards(tmp_path / "corpus", "validation"))
    assert sorted(train + validation) == sorted(sequences)
    assert validation == [s for s in sequences if s in validation]  # held out in corpus order


def test_without_held_out_sequences_train_is_the_corpus_in_order(tmp_path):
    sequences = numbered_sequences(30)
    index = write_shards(sequences, tmp_path / "corpus", shard_size=8, val_size=0, seed=0, max_len=16)
    assert list(read_shards(tmp_path / "corpus", "train")) == sequences
    assert index["splits"]["validation"] == {"sequences": 0, "tokens": 0, "shards": []}
    assert list(read_shards(tmp_path / "corpus", "validation")) == []


def held_out(tmp_path: Path, name: str, seed: int) -> list[list[int]]:
    write_shards(numbered_sequences(500), tmp_path / name, shard_size=64, val_size=50, seed=seed, max_len=16)
    return list(read_shards(tmp_path / name, "validation"))


def test_the_held_out_set_is_deterministic_for_a_seed(tmp_path):
    assert held_out(tmp_path, "a", seed=5) == held_out(tmp_path, "b", seed=5)


def test_another_seed_holds_out_other_sequences(tmp_path):
    assert held_out(tmp_path, "a", seed=5) != held_out(tmp_path, "b", seed=6)


def test_the_held_out_set_is_drawn_from_the_whole_corpus(tmp_path):
    positions = [s[1] - 1000 for s in held_out(tmp_path, "a", seed=0)]
    assert min(positions) < 100 and max(positions) >= 400


def test_val_size_of_the_whole_corpus_is_an_error_that_says_what_to_set(tmp_path):
    with pytest.raises(ValueError, match=r"all 20 sequences.*set val_size to at most 19"):
        write_shards(numbered_sequences(20), tmp_path / "corpus", shard_size=8, val_size=20, seed=0, max_len=16)


def test_an_empty_corpus_cannot_be_written(tmp_path):
    with pytest.raises(ValueError, match="no sequences"):
        write_shards([], tmp_path / "corpus", shard_size=8, val_size=0, seed=0, max_len=16)


def test_a_sequence_longer_than_max_len_is_rejected(tmp_path):
    sequences = [[CLS, 5, SEP], [CLS, *[5] * 18, SEP]]
    with pytest.raises(ValueError, match="sequence 1 has 20 tokens"):
        write_shards(sequences, tmp_path / "corpus", shard_size=8, val_size=0, seed=0, max_len=16)


def test_shards_are_never_written_over_an_existing_corpus(tmp_path):
    write_shards(numbered_sequences(10), tmp_path / "corpus", shard_size=8, val_size=2, seed=0, max_len=16)
    with pytest.raises(ValueError, match="not empty"):
        write_shards(numbered_sequences(10), tmp_path / "corpus", shard_size=8, val_size=2, seed=0, max_len=16)


def test_reading_an_unknown_split_lists_the_splits(tmp_path):
    write_shards(numbered_sequences(10), tmp_path / "corpus", shard_size=8, val_size=2, seed=0, max_len=16)
    with pytest.raises(ValueError, match="available: train, validation"):
        read_shards(tmp_path / "corpus", "test")


def test_reading_a_folder_without_index_is_not_found(tmp_path):
    with pytest.raises(NotFoundError, match=r"index.json not found"):
        read_shards(tmp_path, "train")
