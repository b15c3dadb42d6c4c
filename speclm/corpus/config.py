from dataclasses import dataclass, field

from ..errors import SpeclmError


@dataclass
class CorpusConfig:
    """Where the documents come from and how they are split."""

    source: str = "tiny"  # tiny (ships in the package) | default (registry packages) | import (see `speclm corpus import`)
    sources: list[str] = field(default_factory=list)  # default corpus: generic sources to use (empty = all)
    domains: list[str] = field(default_factory=list)  # default corpus: domains to use (empty = all)
    max_mb_per_source: float = 0.0  # cap each source's text (0 = no cap); a deterministic sample of documents
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    min_eval_docs: int = 50  # valid and test each get at least this many documents where the set allows
    max_doc_mb: float = 100.0  # a single document larger than this is an error
    seed: int = 0
    cache_dir: str = ""  # downloaded packages are kept here (default: $SPECLM_CACHE or ~/.cache/speclm)
    # contamination check (`speclm corpus overlap`, docs/corpus.md): a domain valid/test document
    # overlaps a generic train document when at least overlap_threshold of its word
    # overlap_ngram-grams occur in it; drop_overlap removes those generic documents before tokens
    drop_overlap: bool = True
    overlap_threshold: float = 0.5
    overlap_ngram: int = 8

    def __post_init__(self) -> None:
        if not (0 < self.overlap_threshold <= 1):  # also refuses nan
            raise SpeclmError(f"corpus.overlap_threshold = {self.overlap_threshold} must be in (0, 1]")
        if not (1 <= self.overlap_ngram <= 64):
            raise SpeclmError(f"corpus.overlap_ngram = {self.overlap_ngram} must be between 1 and 64 words")
