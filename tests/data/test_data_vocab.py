"""Tokenizer, vocabulary, caption files and captions.pickle (incl. Python-2 pickles)."""

from __future__ import annotations

import pickle

import pytest
from data_fakes import py2_pickle

from attngan_fast.data._io import load_pickle
from attngan_fast.data.captions import (
    build_caption_sets,
    encode_caption_file,
    load_captions_pickle,
    read_caption_file,
    save_captions_pickle,
)
from attngan_fast.data.vocab import END_TOKEN, Vocabulary, tokenize


def test_tokenize_lowercases_splits_on_words_and_drops_non_ascii():
    assert tokenize("A small Bird, with a RED crown!") == [
        "a",
        "small",
        "bird",
        "with",
        "a",
        "red",
        "crown",
    ]
    assert tokenize("très joli — 日本 bird_2") == ["trs", "joli", "bird_2"]
    assert tokenize("wings\ufffd\ufffdblue") == ["wings", "blue"]
    assert tokenize("?! ...") == []


def test_vocabulary_index_zero_is_end_and_first_appearance_order():
    vocab = Vocabulary.build([["red", "bird"], ["blue", "bird", "red"]])
    assert vocab.ixtoword == {0: END_TOKEN, 1: "red", 2: "bird", 3: "blue"}
    assert vocab.wordtoix == {END_TOKEN: 0, "red": 1, "bird": 2, "blue": 3}
    assert len(vocab) == 4 and "red" in vocab and "green" not in vocab
    assert vocab.decode([1, 2, 0, 0]) == "red bird"


def test_encode_reports_unknown_words():
    vocab = Vocabulary.build([["a", "red", "bird"]])
    enc = vocab.encode("A red Flamingo bird, zzz!")
    assert enc.ids == [1, 2, 3]
    assert enc.unknown == ["flamingo", "zzz"]


def test_vocabulary_rejects_bad_maps():
    with pytest.raises(ValueError, match="index 0"):
        Vocabulary({0: "red", 1: "bird"})
    with pytest.raises(ValueError, match="without gaps"):
        Vocabulary({0: END_TOKEN, 2: "bird"})
    with pytest.raises(ValueError, match="inverse"):
        Vocabulary({0: END_TOKEN, 1: "bird"}, {END_TOKEN: 0, "bird": 2})


def test_encode_caption_file_reports_unknown_and_rejects_all_unknown(tmp_path):
    vocab = Vocabulary.build([["a", "red", "bird"]])
    path = tmp_path / "prompts.txt"
    path.write_text("a red heron\n\nred bird\n")
    lines = encode_caption_file(path, vocab)
    assert [(c.line, c.ids, c.unknown) for c in lines] == [(1, [1, 2], ["heron"]), (3, [2, 3], [])]
    path.write_text("a red bird\nthe green heron\n")
    with pytest.raises(ValueError, match=rf"{path}:2: .*no known word.*green"):
        encode_caption_file(path, vocab)
    path.write_text("a red bird\n\n...\n")
    with pytest.raises(ValueError, match=rf"{path}:3: .*no ASCII word"):
        encode_caption_file(path, vocab)


def test_read_caption_file_limit_blank_lines_and_empty_caption(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("one red bird\n\ntwo blue birds\nthree\n")
    caps = read_caption_file(path, 2, expects="x")
    assert caps == [["one", "red", "bird"], ["two", "blue", "birds"]]
    path.write_text("one red bird\n  --  \nthree\n")
    with pytest.raises(ValueError, match=rf"{path}:2: caption '--' has no ASCII word"):
        read_caption_file(path, expects="x")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'nope.txt'}: not found; the layout"):
        read_caption_file(tmp_path / "nope.txt", expects="the layout wants it")


def test_captions_pickle_round_trip_is_protocol_2(tmp_path):
    sets = build_caption_sets([["red", "bird"], ["a", "bird"]], [["blue", "bird"]])
    assert sets.train == [[1, 2], [3, 2]] and sets.test == [[4, 2]]
    path = tmp_path / "captions.pickle"
    save_captions_pickle(path, sets)
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x02"
    data = pickle.loads(raw)
    assert data == [sets.train, sets.test, sets.vocab.ixtoword, sets.vocab.wordtoix]
    back = load_captions_pickle(path)
    assert back.train == sets.train and back.vocab.ixtoword == sets.vocab.ixtoword


def test_reads_python2_pickles_with_latin1(tmp_path):
    # As Python 2 writes them: words are str (SHORT_BINSTRING), one of them non-ASCII latin-1.
    ixtoword = {0: b"<end>", 1: b"red", 2: b"bird", 3: b"caf\xe9"}
    wordtoix = {v: k for k, v in ixtoword.items()}
    path = tmp_path / "captions.pickle"
    path.write_bytes(py2_pickle([[[1, 2]], [[2, 1, 3]], ixtoword, wordtoix]))
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(path.read_bytes())  # the default ASCII decoding fails on Python 2 str
    sets = load_captions_pickle(path)
    assert sets.train == [[1, 2]] and sets.test == [[2, 1, 3]]
    assert sets.vocab.ixtoword[3] == "café" and sets.vocab.wordtoix["red"] == 1
    big = tmp_path / "filenames.pickle"
    big.write_bytes(py2_pickle([b"001.A/" + b"x" * 300, "002.B/y", 70000]))
    assert load_pickle(big, "x") == ["001.A/" + "x" * 300, "002.B/y", 70000]


def test_bad_captions_pickle_names_the_file(tmp_path):
    path = tmp_path / "captions.pickle"
    path.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=rf"{path}: not a readable pickle"):
        load_captions_pickle(path)
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ValueError, match=rf"{path}: unexpected content"):
        load_captions_pickle(path)
