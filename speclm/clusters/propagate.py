"""Clusters for windows that were not embedded: nearest cluster in token-bag space.

Sentence-BERT is the slow part of the stage (a few to a few tens of windows per second
on 2 CPU cores). With ``clusters.embed_sample`` (generic train) or
``clusters.embed_sample_other`` (every other set and split) only a seeded sample of
windows is embedded; every other window still needs a cluster (SLM-is samples generic
windows by cluster, mix/PN route every training window).

Those windows get the cluster whose *token-bag centroid* is closest: each window is a
TF-IDF vector of its BPE tokens (the tokens stage already holds them, so this costs
nothing); a cluster's centroid is the normalized mean of the TF-IDF vectors of the
embedded generic train windows that Sentence-BERT k-means put in it; a window goes to
the centroid of largest cosine (for nested clusterings, among the children of its
parent). The stage measures how often this agrees with the Sentence-BERT assignment on
held-out embedded windows and reports it (``propagation_agreement`` in the summary).
"""

from __future__ import annotations

import numpy as np

ROWS_PER_BATCH = 8192


def token_bags(windows, idx: np.ndarray, vocab_size: int):
    """Sparse counts [len(idx), vocab_size] of each window's tokens (scipy CSR, float32)."""
    from scipy import sparse

    idx = np.asarray(idx, dtype=np.int64)
    parts = []
    for s in range(0, len(idx), ROWS_PER_BATCH):
        tok = windows.batch(idx[s : s + ROWS_PER_BATCH])[:, : windows.window]
        n, w = tok.shape
        m = sparse.csr_matrix(
            (np.ones(n * w, dtype=np.float32), tok.ravel(), np.arange(0, n * w + 1, w, dtype=np.int64)),
            shape=(n, vocab_size),
        )
        m.sum_duplicates()
        parts.append(m)
    if not parts:
        return sparse.csr_matrix((0, vocab_size), dtype=np.float32)
    return sparse.vstack(parts, format="csr")


class TokenBagProxy:
    """TF-IDF nearest-centroid classifier fitted on Sentence-BERT cluster labels."""

    def __init__(self, bags, vocab_size: int):
        df = np.bincount(bags.indices, minlength=vocab_size).astype(np.float64)
        self.idf = (np.log((1.0 + bags.shape[0]) / (1.0 + df)) + 1.0).astype(np.float32)
        self.vocab_size = vocab_size
        self.centroids: dict[int, np.ndarray] = {}
        self.parent_k: dict[int, int] = {}

    def tfidf(self, bags):
        """log(1 + count) * idf, rows of unit L2 norm."""
        from scipy import sparse

        x = bags.copy()
        x.data = np.log1p(x.data) * self.idf[x.indices]
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        return sparse.diags(1.0 / np.maximum(norms, 1e-12)).astype(np.float32) @ x

    def fit(self, bags, labels: dict[int, np.ndarray], parent_k: dict[int, int]) -> "TokenBagProxy":
        x = self.tfidf(bags)
        for k, lab in labels.items():
            from scipy import sparse

            onehot = sparse.csr_matrix(
                (np.ones(len(lab), dtype=np.float32), lab.astype(np.int64), np.arange(len(lab) + 1)), shape=(len(lab), k)
            )
            c = np.asarray((onehot.T @ x).todense(), dtype=np.float32)
            c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
            self.centroids[k] = c
            self.parent_k[k] = parent_k.get(k, 0)
        return self

    def predict(self, bags) -> dict[int, np.ndarray]:
        x = self.tfidf(bags)
        out: dict[int, np.ndarray] = {}
        for k in sorted(self.centroids):
            c = self.centroids[k]
            pred = np.empty(x.shape[0], dtype=np.int32)
            for s in range(0, x.shape[0], ROWS_PER_BATCH):
                scores = np.asarray(x[s : s + ROWS_PER_BATCH] @ c.T)
                pk = self.parent_k[k]
                if pk:
                    m = k // pk
                    parent = out[pk][s : s + ROWS_PER_BATCH].astype(np.int64)
                    kids = scores.reshape(len(scores), pk, m)[np.arange(len(scores)), parent]
                    pred[s : s + len(scores)] = parent * m + np.argmax(kids, axis=1)
                else:
                    pred[s : s + len(scores)] = np.argmax(scores, axis=1)
            out[k] = pred
        return out


def agreement(bags, labels: dict[int, np.ndarray], parent_k: dict[int, int], vocab_size: int, seed: int = 0) -> dict[int, float]:
    """Share of held-out embedded windows (a random half) whose proxy cluster equals their
    Sentence-BERT cluster, when the proxy is fitted on the other half."""
    n = bags.shape[0]
    if n < 4:
        return {}
    perm = np.random.default_rng(seed).permutation(n)
    a, b = perm[: n // 2], perm[n // 2 :]
    proxy = TokenBagProxy(bags[a], vocab_size).fit(bags[a], {k: v[a] for k, v in labels.items()}, parent_k)
    pred = proxy.predict(bags[b])
    return {k: float(np.mean(pred[k] == labels[k][b])) for k in labels}
