"""Tokens stage: BPE round trip, packed stream and index integrity, the TokenShards reader."""

import json

import numpy as np
import pytest

from conftest import stdlib_texts
from speclm.corpus.store import SPLITS, read_texts
from speclm.core.errors import SpeclmError
from speclm.core.run import open_run
from speclm.tokens.bpe import EOT, EOT_ID, train_bpe
from speclm.tokens.shards import TokenShards, token_dtype
from speclm.tokens.stage import build_tokens, tokenizer_sample, window_index

VARIED = [
    "plain ASCII text.",
    "  leading and trailing spaces  ",
    "tabs\tand\r\nwindows newlines\n\n\n",
    "accents: café, naïve, Ærøskøbing, ß",
    "日本語のテキスト、中文文本、한국어",
    "emoji 🎉👩‍👩‍👧 and math ∀x∈ℝ: x² ≥ 0",
    "Ελληνικά, русский, עברית, العربية",
    "zero\u200bwidth and combining e\u0301",
    "<|endoftext|> written inside a text",
    "",
]


@pytest.fixture(scope="module")
def tok():
    return train_bpe(stdlib_texts(40) + VARIED, vocab_size=400, progress=False)


def test_round_trip_on_varied_unicode(tok):
    for text in VARIED + stdlib_texts(5, start=100):
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text
        assert EOT_ID not in ids  # even the literal "<|endoftext|>" is plain text


def test_loaded_tokenizer_keeps_eot_as_text(tok, tmp_path):
    from speclm.tokens.bpe import load_tokenizer, save_tokenizer

    save_tokenizer(tok, tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    text = "end <|endoftext|> start"
    assert again.encode(text).ids == tok.encode(text).ids and EOT_ID not in again.encode(text).ids


def test_eot_is_id_zero_and_vocab_size(tok):
    assert tok.token_to_id(EOT) == 0
    assert tok.get_vocab_size() == 400


def test_bpe_training_is_deterministic():
    texts = stdlib_texts(30)
    a = train_bpe(texts, vocab_size=350, progress=False).to_str()
    b = train_bpe(texts, vocab_size=350, progress=False).to_str()
    assert a == b


def test_dtype_follows_vocab_size():
    assert token_dtype(8192) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_tokenizer_sample_is_capped_and_deterministic():
    texts = stdlib_texts(50)
    a = tokenizer_sample(texts, 0.01, seed=0)
    assert a == tokenizer_sample(texts, 0.01, seed=0)
    assert sum(len(t.encode()) for t in a) <= 10_000 and a
    assert tokenizer_sample(texts, 100, seed=0).__len__() == 50


def test_window_index_counts_and_doc_of_start():
    docs = np.array([[1, 9], [11, 3], [15, 20]])  # <eot> at 0, 10, 14
    w = window_index(35, docs, 4)
    assert len(w) == (35 - 1) // 4
    assert w[:, 0].tolist() == list(range(0, 32, 4))
    # position 0 is doc 0's separator; 12 is inside doc 1; 16 inside doc 2
    assert dict(zip(w[:, 0].tolist(), w[:, 1].tolist()))[0] == 0
    assert dict(zip(w[:, 0].tolist(), w[:, 1].tolist()))[12] == 1
    assert dict(zip(w[:, 0].tolist(), w[:, 1].tolist()))[16] == 2


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A run with a small imported corpus and its tokens (built once for this module)."""
    from speclm.corpus.stage import ImportSpec, import_corpus

    root = tmp_path_factory.mktemp("tok")
    gen = root / "generic.jsonl"
    gen.write_text("\n".join(json.dumps({"text": t}) for t in stdlib_texts(50) + VARIED[:-1]) + "\n", encoding="utf-8")
    dom = root / "dom.jsonl"
    dom.write_text("\n".join(json.dumps({"text": t}) for t in stdlib_texts(12, start=60)) + "\n", encoding="utf-8")
    run = open_run(root / "run", "tiny", ["corpus.source=import", "tokens.vocab_size=300", "tokens.window=16"])
    import_corpus(run, ImportSpec(generic=str(gen), domains={"dom": str(dom)}))
    summary = build_tokens(run)
    return run, summary


def test_streams_hold_the_documents_in_order(built):
    run, _ = built
    shards = TokenShards(run.tokens_dir)
    tok = shards.tokenizer
    for set_name in shards.sets():
        for split in SPLITS:
            texts = read_texts(run.corpus_dir, set_name, split)
            stream = shards.stream(set_name, split)
            docs = shards.docs(set_name, split)
            assert stream.dtype == np.uint16
            assert len(docs) == len(texts)
            for (start, length), text in zip(docs, texts):
                assert stream[start - 1] == EOT_ID
                assert tok.decode(stream[start : start + length].tolist(), skip_special_tokens=False) == text
            # documents tile the stream: <eot> doc <eot> doc ...
            assert docs[0, 0] == 1
            assert (docs[1:, 0] == docs[:-1, 0] + docs[:-1, 1] + 1).all()
            assert docs[-1, 0] + docs[-1, 1] == len(stream)


def test_windows_tile_the_stream(built):
    run, summary = built
    shards = TokenShards(run.tokens_dir)
    assert shards.window == 16 and shards.vocab_size == 300
    assert shards.sets() == ["generic", "dom"]
    for set_name in shards.sets():
        for split in SPLITS:
            w = shards.windows(set_name, split)
            stream = shards.stream(set_name, split)
            assert len(w) == (len(stream) - 1) // 16 == summary["sets"][set_name][split]["windows"]
            assert (w.starts == np.arange(len(w)) * 16).all()
            assert w[len(w) - 1][-1] == stream[len(w) * 16]  # last target is in the stream
            # consecutive windows share exactly one token (the last target is the next input)
            assert w[0][-1] == w[1][0]
            idx = np.array([len(w) - 1, 0, 1, 1])
            batch = w.batch(idx)
            assert batch.shape == (4, 17) and batch.dtype == np.int64
            for row, i in zip(batch, idx):
                assert (row == w[int(i)]).all()
                assert (row == stream[i * 16 : i * 16 + 17]).all()
            docs = shards.docs(set_name, split)
            for i in range(len(w)):
                d = w.doc_index(i)
                assert docs[d, 0] - 1 <= w.starts[i] < docs[d, 0] + docs[d, 1]


def test_window_text_is_the_decoded_inputs(built):
    run, _ = built
    shards = TokenShards(run.tokens_dir)
    w = shards.windows("generic", "train")
    text = w.text(3)
    ids = [t for t in w[3][:16].tolist() if t != EOT_ID]
    assert text == shards.tokenizer.decode(ids) and text


def test_summary_counts_tokens(built):
    run, summary = built
    for set_name, per in summary["sets"].items():
        for split, s in per.items():
            assert s["tokens"] == len(TokenShards(run.tokens_dir).stream(set_name, split))
            assert s["bytes_per_token"] > 1.0
    assert summary["vocab_size"] == 300


def test_a_tokenizer_that_does_not_match_the_shards_is_refused(built, tmp_path):
    import shutil

    run, _ = built
    copy = tmp_path / "tokens"
    shutil.copytree(run.tokens_dir, copy)
    other = train_bpe(stdlib_texts(10), vocab_size=280, progress=False)
    (copy / "tokenizer.json").write_text(other.to_str(), encoding="utf-8")
    with pytest.raises(SpeclmError, match="does not match the token shards"):
        TokenShards(copy).tokenizer


def test_missing_tokens_say_what_to_run(tmp_path):
    with pytest.raises(SpeclmError, match="speclm tokens"):
        TokenShards(tmp_path)


def test_unknown_set_or_split(built):
    run, _ = built
    shards = TokenShards(run.tokens_dir)
    with pytest.raises(SpeclmError, match="no set 'nope'"):
        shards.windows("nope", "train")
    with pytest.raises(SpeclmError, match="unknown split 'dev'"):
        shards.windows("dom", "dev")
