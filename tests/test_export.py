"""Export to a transformers folder: LlamaForCausalLM loads it and gives our logits."""

import json

import pytest
import torch

from speclm.core.errors import SpeclmError
from speclm.inference.export import export_checkpoint, export_hf
from speclm.inference.generate import generate_text, sample_ids
from speclm.model.transformer import Transformer, named_shape
from speclm.train.checkpoint import save_checkpoint

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)

TEXT = ["the quick brown fox jumps over the lazy dog", "a small specialized language model", "plan early!"] * 20


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXT, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def vocab(tokenizer_file):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_file)).get_vocab_size()


@pytest.mark.parametrize("mlp,tie", [("swiglu", False), ("plain", True)])
def test_transformers_loads_the_export_with_our_logits(tmp_path, tokenizer_file, mlp, tie):
    torch.manual_seed(0)
    model = Transformer(named_shape("tiny", vocab(tokenizer_file), max_seq_len=32, mlp=mlp, tie_embeddings=tie))
    with torch.no_grad():  # non-trivial norm weights, so a mis-mapped norm shows
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    save_checkpoint(tmp_path / "ckpt", model, files={"tokenizer.json": tokenizer_file})
    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]

    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), torch_dtype=torch.float32)
    assert type(hf).__name__ == "LlamaForCausalLM"
    hf.eval()
    x = torch.randint(0, model.shape.vocab_size, (2, 32))
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(x).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    assert ours.abs().max().item() > 1e-2  # not trivially equal

    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    from tokenizers import Tokenizer

    assert tok.encode("plan early!") == Tokenizer.from_file(str(tokenizer_file)).encode("plan early!").ids

    # greedy decoding agrees with transformers' generate
    prompt = Tokenizer.from_file(str(tokenizer_file)).encode("the quick").ids
    mine = sample_ids(model, prompt, max_new_tokens=8, temperature=0)
    ref = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                      pad_token_id=0)[0, len(prompt):].tolist()
    assert mine == ref


def test_sampling_is_seeded(tokenizer_file):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    torch.manual_seed(0)
    model = Transformer(named_shape("tiny", tok.get_vocab_size(), max_seq_len=16))
    a = generate_text(model, tok, "the", max_new_tokens=20, temperature=1.0, top_k=0, seed=1)
    b = generate_text(model, tok, "the", max_new_tokens=20, temperature=1.0, top_k=0, seed=1)
    c = generate_text(model, tok, "the", max_new_tokens=20, temperature=1.0, top_k=0, seed=2)
    assert a == b and a != c
    # context longer than max_seq_len is cropped, not an error
    assert len(sample_ids(model, [1] * 40, max_new_tokens=3, temperature=0)) == 3


def test_mismatched_tokenizer_is_a_clear_error(tmp_path, tokenizer_file):
    torch.manual_seed(0)
    small = Transformer(named_shape("tiny", 100, max_seq_len=16))  # fewer ids than the tokenizer
    with pytest.raises(SpeclmError, match="not the tokenizer"):
        export_hf(small, tokenizer_file, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    ok = Transformer(named_shape("tiny", vocab(tokenizer_file), max_seq_len=16))
    save_checkpoint(tmp_path / "ckpt", ok, meta={"tokenizer_sha256": "0" * 64}, files={"tokenizer.json": tokenizer_file})
    with pytest.raises(SpeclmError, match="not the one"):
        export_checkpoint(tmp_path / "ckpt", tmp_path / "hf")


def _front_matter(text: str) -> dict:
    import yaml

    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.parametrize("native", [True, False])
def test_export_loads_and_generates_without_a_warning_and_has_a_card(tmp_path, tokenizer_file, monkeypatch, native):
    import logging
    import warnings

    from speclm.inference import export as export_mod

    if not native:  # the hand-written folder (no transformers at export time) must load the same way
        monkeypatch.setattr(export_mod, "_save_with_transformers", lambda *a: False)
    torch.manual_seed(0)
    model = Transformer(named_shape("tiny", vocab(tokenizer_file), max_seq_len=32))
    save_checkpoint(tmp_path / "ckpt", model, files={"tokenizer.json": tokenizer_file}, meta={"domain": "cooking"})
    out = export_checkpoint(tmp_path / "ckpt", tmp_path / "hf")
    gen = json.loads((out / "generation_config.json").read_text())
    assert "max_length" not in gen and gen["eos_token_id"] == gen["pad_token_id"] == 0
    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers" and "speclm" in meta["tags"]
    assert meta["datasets"] == ["cooking"] and meta["metrics"] == ["perplexity"]

    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                seen.append(record.getMessage())

    handler = Catch()
    logging.getLogger("transformers").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hf = transformers.AutoModelForCausalLM.from_pretrained(str(out))
            tok = transformers.AutoTokenizer.from_pretrained(str(out))
            ids = tok("the quick", return_tensors="pt")
            new = hf.generate(**ids, max_new_tokens=12, do_sample=True, top_k=20)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert new.shape[1] > ids["input_ids"].shape[1]
    assert not seen, seen
    assert not [str(w.message) for w in caught if "speclm" not in str(w.filename)], [str(w.message) for w in caught]


def test_a_job_folder_exports_its_best_checkpoint(tmp_path, tokenizer_file):
    from speclm.inference.export import resolve_checkpoint

    torch.manual_seed(0)
    model = Transformer(named_shape("tiny", vocab(tokenizer_file), max_seq_len=32))
    job = tmp_path / "specialize" / "slm" / "cooking" / "all"
    for name in ("best", "final", "checkpoint"):
        save_checkpoint(job / name, model, files={"tokenizer.json": tokenizer_file})
    (job / "cost.json").write_text(json.dumps({"phase": "specialize"}))
    assert resolve_checkpoint(job) == job / "final"  # a fine-tune's final/ holds its best validated weights
    (job / "cost.json").write_text(json.dumps({"phase": "pretrain"}))
    assert resolve_checkpoint(job) == job / "best"
    assert resolve_checkpoint(job / "final") == job / "final"
    out = export_checkpoint(job, tmp_path / "hf")
    assert json.loads((out / "speclm-export.json").read_text())["checkpoint"] == str((job / "best").resolve())
    with pytest.raises(SpeclmError, match="neither a checkpoint folder"):
        resolve_checkpoint(tmp_path / "specialize")
