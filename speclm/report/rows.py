"""Which config made a results row: the hash every grid row carries (``config``), so a
report, a plan or a table reads only the rows of the run's current config."""

from __future__ import annotations

from ..core.config import to_dict
from ..core.manifest import hash_obj


def config_hash(run) -> str:
    """What makes a row stale: every config section except the preset's name."""
    from ..core.sections import KEYED_AWAY_FROM, NOT_RESULTS

    d = to_dict(run.config)
    d.pop("name", None)
    for k in NOT_RESULTS:  # where the curves go (train.logger) changes no row
        d["train"].pop(k, None)
    for k in ("seeds", "bootstrap"):  # more seeds add rows; the bootstrap only reports: rows stay valid
        d["methods"].pop(k, None)
    for k in ("curve_fractions", "curve_methods"):  # unset, they leave the hash of older runs as it was
        if not d["methods"].get(k):
            d["methods"].pop(k, None)
    for k, v in KEYED_AWAY_FROM.items():  # later fields at the old behaviour: the hash stays as it was
        if d["methods"].get(k) == v:
            d["methods"].pop(k, None)
    return hash_obj(d)[:16]

