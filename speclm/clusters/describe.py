"""What the clustering says about each domain: histograms, the paper's Tables 9 and 10,
importance weights and the effective size of an importance resample; and, per cluster,
representative snippets and top terms so a person can see what it holds.

Definitions (generic = the generic train split, N windows, n_c of them in cluster c):

* ``p_d(c)``: share of domain d's train windows in cluster c; ``p_g(c)`` likewise for generic.
* Table 9 analogue ``top_share``: max_c p_d(c). Table 10 analogue ``entropy``:
  -sum_c p_d(c) ln p_d(c), in nats (the paper's c4 row, 2.73 at k=16, is near ln 16 = 2.77).
* ``w(c) = p_d(c) / p_g(c)`` (0 where p_g(c) = 0; the domain mass on such clusters cannot
  be resampled and is reported as ``dropped_mass``).
* The importance resample draws generic window i with probability
  ``q_i = w(c_i) / sum_j w(c_j) = p_d(c_i) / n_{c_i}`` (p_d renormalized over non-empty
  clusters). ``ess = 1 / sum_i q_i^2 = 1 / sum_c p_d(c)^2 / n_c``; drawing B windows with
  replacement gives ``distinct = sum_i 1 - (1 - q_i)^B`` different windows in expectation,
  and ``repetition = B / distinct`` (1 = no window repeats).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

WORD = re.compile(r"[A-Za-z][A-Za-z_']{2,}")


def entropy(p: np.ndarray) -> float:
    """Natural-log entropy of a histogram (docs/paper.md Table 10 uses nats)."""
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def importance_weights(p_dom: np.ndarray, p_gen: np.ndarray) -> np.ndarray:
    p_dom, p_gen = np.asarray(p_dom, np.float64), np.asarray(p_gen, np.float64)
    return np.divide(p_dom, p_gen, out=np.zeros_like(p_dom), where=p_gen > 0)


def resample_stats(p_dom: np.ndarray, gen_counts: np.ndarray, budget_windows: int) -> dict:
    """ESS, expected distinct windows and repetition of the importance resample (see above)."""
    p = np.asarray(p_dom, np.float64)
    n = np.asarray(gen_counts, np.float64)
    ok = n > 0
    dropped = float(p[~ok].sum())
    kept = p[ok].sum()
    if kept <= 0:
        return {"ess": 0.0, "ess_fraction": 0.0, "distinct": 0.0, "repetition": float("inf"),
                "dropped_mass": dropped, "budget_windows": int(budget_windows)}
    p, n = p[ok] / kept, n[ok]
    ess = 1.0 / float((p * p / n).sum())
    q = p / n  # per-window probability inside each cluster
    B = float(budget_windows)
    distinct = float((n * -np.expm1(B * np.log1p(-np.minimum(q, 1.0 - 1e-15)))).sum())
    return {
        "ess": ess,
        "ess_fraction": ess / float(n.sum()),
        "distinct": distinct,
        "repetition": B / distinct if distinct > 0 else float("inf"),
        "dropped_mass": dropped,
        "budget_windows": int(budget_windows),
    }


def domain_tables(hists: dict[str, dict[int, np.ndarray]], gen_counts: dict[int, np.ndarray], budget_windows: int) -> dict:
    """Per domain and k: top share, top cluster, entropy, weights, resample stats.

    ``hists[set][k]`` is the histogram (probabilities) of a set's train windows; the
    "generic" entry is the reference row."""
    out: dict = {}
    for name, per_k in hists.items():
        out[name] = {}
        for k, p in sorted(per_k.items()):
            row = {
                "top_share": float(p.max()),
                "top_cluster": int(p.argmax()),
                "entropy": entropy(p),
                "nonzero_clusters": int((p > 0).sum()),
            }
            if name != "generic":
                pg = gen_counts[k] / max(1, gen_counts[k].sum())
                w = importance_weights(p, pg)
                row["max_weight"] = float(w.max())
                row.update(resample_stats(p, gen_counts[k], budget_windows))
            out[name][str(k)] = row
    return out


def format_tables(tables: dict, ks: list[int]) -> str:
    """Markdown: Table 9 (top share), Table 10 (entropy) and the resample table."""
    names = [n for n in tables if n != "generic"] + (["generic"] if "generic" in tables else [])
    head = "| set | " + " | ".join(f"k={k}" for k in ks) + " |\n|---|" + "---|" * len(ks) + "\n"

    def table(key: str, fmt: str) -> str:
        rows = "".join(
            f"| {n} | " + " | ".join(format(tables[n][str(k)][key], fmt) for k in ks) + " |\n" for n in names
        )
        return head + rows

    lines = ["### Share of the most frequent cluster (paper Table 9)\n", table("top_share", ".2f"),
             "\n### Entropy of the cluster histogram, nats (paper Table 10)\n", table("entropy", ".2f")]
    doms = [n for n in names if n != "generic"]
    if doms:
        budget = tables[doms[0]][str(ks[0])]["budget_windows"]
        lines.append(f"\n### Importance resample of the generic set at {budget:,} windows: ESS (share of generic) / repetition\n")
        lines.append(head + "".join(
            f"| {n} | " + " | ".join(
                f"{tables[n][str(k)]['ess_fraction']:.3f} / {tables[n][str(k)]['repetition']:.2f}x" for k in ks
            ) + " |\n" for n in doms
        ))
    return "".join(lines)


def plot_domain(path: Path, domain: str, hists: dict[int, np.ndarray], generic: dict[int, np.ndarray], top: int = 32) -> None:
    """One PNG: per k, the domain's histogram against the generic one (the domain's top
    clusters, most frequent first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core import atomic

    ks = sorted(hists)
    fig, axes = plt.subplots(len(ks), 1, figsize=(10, 2.6 * len(ks)), squeeze=False)
    for ax, k in zip(axes[:, 0], ks):
        order = np.argsort(-hists[k], kind="stable")[: min(top, k)]
        x = np.arange(len(order))
        ax.bar(x - 0.2, hists[k][order], 0.4, label=domain, color="tab:orange")
        ax.bar(x + 0.2, generic[k][order], 0.4, label="generic", color="tab:blue")
        ax.set_xticks(x, [str(c) for c in order], fontsize=7, rotation=90 if len(order) > 16 else 0)
        ax.set_ylabel("share of windows")
        shown = "" if len(order) == k else f" (top {len(order)} of {k} clusters)"
        ax.set_title(f"{domain} vs generic, k={k}{shown}", fontsize=10)
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("cluster (most frequent in the domain first)")
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def snippet(text: str, chars: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= chars else text[: chars - 1] + "…"


def top_terms(cluster_texts: dict[int, list[str]], n_terms: int = 8) -> dict[int, list[str]]:
    """Words most characteristic of each cluster: frequent in it and rarer elsewhere
    (each word's contribution to KL(cluster || all), over words seen at least twice)."""
    from collections import Counter

    counts = {c: Counter(w.lower() for t in texts for w in WORD.findall(t)) for c, texts in cluster_texts.items()}
    # words in most windows of every kind ("the", "and") say nothing about a cluster
    df = Counter(w for texts in cluster_texts.values() for t in texts for w in {x.lower() for x in WORD.findall(t)})
    n_texts = max(1, sum(len(t) for t in cluster_texts.values()))
    common = {w for w, f in df.items() if f > 0.3 * n_texts}
    counts = {c: Counter({w: f for w, f in cnt.items() if w not in common}) for c, cnt in counts.items()}
    total = Counter()
    for cnt in counts.values():
        total.update(cnt)
    n_all = max(1, sum(total.values()))
    out = {}
    for c, cnt in counts.items():
        n_c = max(1, sum(cnt.values()))
        scored = [
            (f / n_c * np.log((f / n_c) / (total[w] / n_all)), w) for w, f in cnt.items() if f >= 2
        ]
        out[c] = [w for _, w in sorted(scored, reverse=True)[:n_terms]]
    return out


def cluster_cards(k: int, centroids: np.ndarray, emb: np.ndarray, emb_rows: np.ndarray, assign: np.ndarray,
                  text_fn, sizes: np.ndarray, n_snippets: int = 3, texts_per_cluster: int = 24) -> str:
    """Markdown: for each cluster of this k, its size, top terms and the generic windows
    nearest its centroid. ``emb`` holds the embeddings of generic train windows
    ``emb_rows``; ``assign`` is the cluster of every generic train window."""
    rng = np.random.default_rng(0)
    near: dict[int, list[int]] = {}
    sample: dict[int, list[str]] = {}
    lab = assign[emb_rows]
    sims = np.einsum("ij,ij->i", emb, centroids[lab])
    for c in range(k):
        members = np.flatnonzero(lab == c)
        near[c] = [int(emb_rows[j]) for j in members[np.argsort(-sims[members])][:n_snippets]]
        everyone = np.flatnonzero(assign == c)
        pick = rng.choice(everyone, size=min(texts_per_cluster, len(everyone)), replace=False) if len(everyone) else []
        sample[c] = [text_fn(int(i)) for i in pick]
    terms = top_terms(sample)
    total = max(1, int(sizes.sum()))
    lines = [f"# Clusters at k={k}\n\nFor each cluster: its share of the generic train windows, "
             "characteristic words, and the windows nearest its centroid.\n"]
    for c in np.argsort(-sizes, kind="stable"):
        c = int(c)
        lines.append(f"\n## cluster {c}: {sizes[c]:,} windows ({sizes[c] / total:.1%})\n")
        lines.append(f"top terms: {', '.join(terms.get(c, [])) or '(none)'}\n")
        for i in near[c]:
            lines.append(f"- `{snippet(text_fn(i)).replace('`', chr(39))}`\n")
        if sizes[c] == 0:
            lines.append("(empty cluster)\n")
    return "".join(lines)
