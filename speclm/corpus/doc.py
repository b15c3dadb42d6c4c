"""One document of the corpus, as every corpus source yields it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Doc:
    """A document: `id` is stable and unique within its set (e.g. "gcide:1234",
    "kjv:Genesis.1"), `text` is normalised text, `source` names where it came from."""

    id: str
    text: str
    source: str
