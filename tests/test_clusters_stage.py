"""The clusters stage end to end on the shipped tiny corpus: real Sentence-BERT (small
samples, short chunks), real faiss, every window assigned, resume and corruption."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FAST_CLUSTERS

from speclm.core.errors import SpeclmError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from speclm.corpus.stage import build_corpus
    from speclm.core.run import open_run
    from speclm.tokens.stage import build_tokens

    r = open_run(tmp_path_factory.mktemp("clusters") / "run", "tiny", FAST_CLUSTERS)
    build_corpus(r)
    build_tokens(r)
    return r


@pytest.fixture(scope="module")
def built(run):
    from speclm.clusters.stage import build_clusters

    return build_clusters(run, progress=False)


def test_every_window_of_every_set_gets_a_cluster(run, built):
    from speclm.clusters.store import Clusters
    from speclm.tokens.shards import TokenShards

    shards, c = TokenShards(run.tokens_dir), Clusters(run.clusters_dir)
    assert c.ks == [2, 4] and built["ks"] == [2, 4]
    for s in shards.sets():
        for sp in ("train", "valid", "test"):
            for k in c.ks:
                a = c.assign(k, s, sp)
                assert a.dtype == np.int32 and len(a) == len(shards.windows(s, sp))
                assert a.min() >= 0 and a.max() < k
        h = c.histogram(4, s)
        assert h.shape == (4,) and h.sum() == pytest.approx(1.0)
    # only a sample was embedded; the proxy's agreement was measured
    assert built["windows"]["generic/train"]["embedded"] == 48
    assert set(built["propagation_agreement"]) == {"2", "4"}
    # the generic set uses every cluster at k=2
    assert (c.histogram(2, "generic") > 0).all()


def test_describe_tables_plots_and_cards(run, built):
    from speclm.tokens.shards import TokenShards

    domains = TokenShards(run.tokens_dir).domains()
    tables = built["describe"]["tables"]
    assert set(tables) == set(domains) | {"generic"}
    for d in domains:
        for k in ("2", "4"):
            row = tables[d][k]
            assert 1 / int(k) <= row["top_share"] <= 1
            assert 0 <= row["entropy"] <= np.log(int(k)) + 1e-9
            assert 0 < row["ess"] <= built["windows"]["generic/train"]["windows"]
            assert row["repetition"] >= 1.0
        png = run.clusters_dir / "describe" / f"{d}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cards = (run.clusters_dir / "describe" / "k4-clusters.md").read_text()
    assert cards.count("## cluster ") == 4 and "top terms:" in cards
    report = (run.clusters_dir / "describe" / "report.md").read_text()
    assert "Table 9" in report and "Table 10" in report and domains[0] in report


def test_a_finished_stage_is_skipped(run, built):
    from speclm.clusters.stage import build_clusters

    path = run.clusters_dir / "k4" / "centroids.npy"
    before = path.stat().st_mtime_ns
    assert build_clusters(run, progress=False)["ks"] == [2, 4]
    assert path.stat().st_mtime_ns == before


def test_corrupted_embedding_shard_is_detected_and_recomputed(run, built):
    from speclm.clusters.stage import embed_windows
    from speclm.clusters.store import EmbeddingCache

    cache = EmbeddingCache(run.clusters_dir)
    npy, side = cache.paths("kjv", "train", 0)
    good = np.load(npy)
    npy.write_bytes(npy.read_bytes()[:200])  # truncated by a crash or a full disk
    emb = embed_windows(run, progress=False)
    rows, e = emb[("kjv", "train")]
    assert np.allclose(e, good, atol=1e-5)  # recomputed, same embeddings
    assert np.allclose(np.load(npy), good, atol=1e-5)
    assert json.loads(side.read_text())["rows"] == len(rows) == 4


def test_ranks_fill_disjoint_shares_of_the_cache(run, built):
    import shutil

    from speclm.clusters.stage import embed_windows

    root = run.clusters_dir / "embeddings"
    shutil.rmtree(root)
    embed_windows(run, progress=False, rank=1, world=2, gather=False)
    one = {p.relative_to(root) for p in root.rglob("shard-*.npy")}
    embed_windows(run, progress=False, rank=0, world=2, gather=False)
    both = {p.relative_to(root) for p in root.rglob("shard-*.npy")}
    assert one and len(one) < len(both)
    stats = root / "last-run-rank0.json"
    stats.unlink()
    embed_windows(run, progress=False, rank=0, world=1)  # everything cached: nothing computed
    assert not stats.exists()
    assert len(both) == 15  # 5 sets x 3 splits, one shard each


def test_k_larger_than_the_fit_sample_is_a_clear_error(run, built):
    from speclm.clusters.stage import build_clusters
    from speclm.core.run import open_run

    r = open_run(run.path, None, ["clusters.ks=[2, 100]"], save=False)
    with pytest.raises(SpeclmError, match="k=100 is larger than the number of generic windows"):
        build_clusters(r, progress=False)


def test_a_set_with_no_train_windows_is_a_clear_error():
    from speclm.clusters.stage import check_windows

    class Counts:  # window counts only: what check_windows reads
        def sets(self):
            return ["generic", "law"]

        def windows(self, s, sp):
            return [] if s == "law" and sp == "train" else [0, 1]

    with pytest.raises(SpeclmError, match="domain 'law' has no windows in its train split"):
        check_windows(Counts())


@pytest.mark.slow
def test_two_torchrun_ranks_share_the_embedding(run, built):
    """torchrun with 2 CPU ranks (gloo): both embed, rank 0 fits; the result is complete."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from speclm.clusters.store import Clusters

    shutil.rmtree(run.clusters_dir)
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = run.path.parent / "clusters_ranks.py"  # torchrun would read --run as its own option
    script.write_text(f"from speclm.cli import main\nmain(['clusters', '--run', {str(run.path)!r}])\n")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = sorted(p.name for p in (run.clusters_dir / "embeddings").glob("last-run-rank*.json"))
    assert stats == ["last-run-rank0.json", "last-run-rank1.json"]  # both ranks embedded a share
    assert (run.clusters_dir / "manifest.json").exists()
    assert Clusters(run.clusters_dir).ks == [2, 4]


def test_changing_the_backend_recomputes_the_embeddings(run, built):
    """The backend that runs is in the stage's fingerprint and in every shard's cache key:
    torch instead of the CPU default recomputes (same windows, embeddings within cosine 0.99)."""
    from speclm.clusters.stage import STAGE, embed_backend, embed_windows, stage_config, stage_inputs
    from speclm.clusters.store import EmbeddingCache
    from speclm.core import manifest
    from speclm.core.run import open_run

    other = open_run(run.path, None, ["clusters.backend=torch"], save=False)
    assert embed_backend(run) != "torch" == embed_backend(other)
    assert stage_config(other) == stage_config(run) and stage_inputs(other) != stage_inputs(run)
    assert not manifest.is_fresh(other.clusters_dir, STAGE, stage_config(other), stage_inputs(other))
    _, side = EmbeddingCache(run.clusters_dir).paths("generic", "train", 0)
    key_before = json.loads(side.read_text())["key"]
    before = embed_windows(run, progress=False)[("generic", "train")][1]
    after = embed_windows(other, progress=False)[("generic", "train")][1]
    assert json.loads(side.read_text())["key"] != key_before
    # recomputed (the key above changed); fp32 runtimes may agree with torch to 1e-6, int8 not
    assert before.shape == after.shape and (before * after).sum(1).min() >= 0.99
