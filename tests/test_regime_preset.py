"""The cpu-regime preset (issue 23 item 1) meets, from its config alone, the premises that do
not need a run: the large model at least 3x the small one, the projected network at least 8x
at pretraining, both sizes at least 100x below the pretraining, every domain of the default
corpus, every method of the paper with 3 seeds where a finding reads it, curves at 1/8-1/2."""

from speclm.core import config
from speclm.corpus.sources.catalog import DOMAIN_NAMES
from speclm.methods.sizes import parse_size
from speclm.model.projected import pn_param_counts
from speclm.model.transformer import named_shape, param_breakdown
from speclm.report import premises


def test_cpu_regime_preset_meets_its_config_premises():
    cfg = config.load("cpu-regime")
    m, t = cfg.methods, cfg.train
    shape = {w: named_shape(n, cfg.tokens.vocab_size, max_seq_len=cfg.tokens.window, tie_embeddings=cfg.model.tie_embeddings)
             for w, n in (("small", cfg.model.small), ("large", cfg.model.large))}
    small, large = (param_breakdown(s)["total"] for s in (shape["small"], shape["large"]))
    assert large >= 3 * small
    pn = pn_param_counts(shape["small"], m.pn_k, m.pn_h, m.pn_m)
    assert pn["inference"] == small and pn["total"] / small >= premises.MIN_PN_RATIO
    pretrain_tokens = t.max_steps * t.batch_size * cfg.tokens.window
    assert len(m.sizes) == 2 and all(pretrain_tokens / parse_size(s) >= premises.MIN_PRETRAIN_RATIO for s in m.sizes)
    assert cfg.corpus.source == "default" and not cfg.corpus.domains  # every domain of the default corpus
    assert len(DOMAIN_NAMES) >= premises.MIN_DOMAINS
    paper = {"slm", "slm-nopt", "llm", "llm-lora", "slm-d", "slm-is", "slm-mix", "slm-pn"}
    assert set(m.grid_methods) == paper | {"slm-is-full"} and set(m.seed_methods) == paper and m.seeds == 3
    assert m.curve_fractions == [0.125, 0.25, 0.5] and m.is_draw == "cycle" and m.budget == "flops"
