"""The model card (``README.md``) of an exported model: YAML front matter that the Hugging
Face hub reads (library_name, pipeline_tag, tags, datasets, metrics), then what the model
is (recipe, domain, shape), how good it is (test perplexity with its interval against the
plain small model, when the run measured them), what it cost to train (``cost.json``) and
the licences of the data it was trained on.

:func:`checkpoint_facts` reads what a checkpoint knows about itself; the grid layer adds
what the run measured (speclm.grid.recommended) as plain data, and :func:`render_card`
writes the card from the merged facts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional


def checkpoint_facts(checkpoint: str | Path, model) -> dict:
    """What a checkpoint folder says about itself: shape, domain, training costs."""
    from ..train.checkpoint import read_meta
    from ..train.cost import read_cost

    meta = read_meta(checkpoint)
    s = model.shape
    facts = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "params": int(model.param_count()),
        "shape": {"layers": s.n_layer, "d_model": s.d_model, "heads": s.n_head, "d_mlp": s.d_mlp,
                  "vocab": s.vocab_size, "context": s.max_seq_len, "mlp": s.mlp},
    }
    if meta.get("domain"):
        facts["domains"] = [str(meta["domain"])]
    if meta.get("size"):
        facts["size"] = str(meta["size"])
    try:
        facts["cost"] = read_cost(checkpoint)
    except Exception:  # a checkpoint without cost.json (or a damaged one): the card says so
        facts["cost"] = None
    return facts


def _yaml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(x)) for x in items) + "]"


def _est(e: Optional[dict]) -> str:
    if not e:
        return "–"
    return f"{e['ppl']:.2f} (95% interval {e['lo']:.2f} to {e['hi']:.2f})"


def _num(v: float) -> str:
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _cost_lines(cost: Optional[dict]) -> list[str]:
    if not cost:
        return ["No `cost.json` beside the checkpoint: training costs unknown."]
    out = ["| phase | tokens | FLOPs | wall time | device-hours | device |", "|---|---|---|---|---|---|"]
    for phase, label in (("pretrain", "generic pretraining"), ("specialize", "specialization")):
        c = cost.get(phase) or {}
        if not c:
            continue
        out.append(f"| {label} | {_num(float(c.get('tokens', 0)))} | {float(c.get('flops', 0)):.3g} | "
                   f"{float(c.get('wall_seconds', 0)):.0f} s | {float(c.get('device_hours', 0)):.3g} | "
                   f"{c.get('device_kind', '')} |")
    return out


def render_card(f: dict) -> str:
    """The card's markdown, YAML front matter first."""
    method = f.get("method") or "speclm"
    domains = f.get("domains") or []
    tags = ["speclm", "llama", "small-specialized-language-model", *([method] if f.get("method") else [])]
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation", f"tags: {_yaml_list(tags)}"]
    if domains:
        front.append(f"datasets: {_yaml_list(domains)}")
    front += ["metrics: [\"perplexity\"]", "---", ""]
    title = f"# {f.get('name') or 'speclm model'}"
    dom = ", ".join(domains) if domains else "(not recorded)"
    s = f.get("shape") or {}
    body = [title, "",
            f"A small language model specialized for **{dom}**, trained with speclm "
            f"(Grangier et al., *Need a Small Specialized Language Model? Plan Early!*). It is a plain "
            f"`LlamaForCausalLM`: `AutoModelForCausalLM.from_pretrained(folder)` loads it with no speclm code.", "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "tok = AutoTokenizer.from_pretrained(FOLDER)",
            "model = AutoModelForCausalLM.from_pretrained(FOLDER)",
            "ids = tok(\"Your prompt\", return_tensors=\"pt\")",
            "print(tok.decode(model.generate(**ids, max_new_tokens=60, do_sample=True)[0]))",
            "```", "",
            "## Recipe", "",
            f"- method: **{method}**" + (f" ({f['method_about']})" if f.get("method_about") else ""),
            ]
    if f.get("recipe_source"):
        body.append(f"- why this recipe: {f['recipe_source']}")
    body.append(f"- domain: {dom}" + (f"; specialization set {f['size']}" + (
        f" ({f['spec_tokens']:,} tokens)" if f.get("spec_tokens") else "") if f.get("size") else ""))
    if f.get("seed") is not None:
        body.append(f"- seed: {f['seed']}" + (f" (the best of {f['seeds']} by validation loss)" if f.get("seeds", 1) > 1 else ""))
    if s:
        body.append(f"- shape: {f.get('params', 0):,} parameters; {s['layers']} layers, d_model {s['d_model']}, "
                    f"{s['heads']} heads, MLP {s['d_mlp']} ({s['mlp']}), vocabulary {s['vocab']}, context {s['context']} tokens")
    if f.get("run"):
        body.append(f"- trained in the speclm run folder `{f['run']}` (checkpoint `{f.get('checkpoint', '')}`)")
    body += ["", "## Perplexity", ""]
    if f.get("ppl"):
        body += ["On the domain's held-out test split (tokens of this model's own tokenizer); intervals are 95%, "
                 "from a bootstrap over test documents.", "",
                 "| model | test perplexity |", "|---|---|",
                 f"| this model ({method}) | {_est(f['ppl'])} |"]
        if f.get("baseline"):
            body.append(f"| plain small model ({f['baseline'].get('method', 'slm')}: pretrained, then fine-tuned) | "
                        f"{_est(f['baseline'])} |")
        if f.get("difference"):
            body += ["", f"Difference: {f['difference']}"]
        if f.get("caveat"):
            body += ["", f"Caveat: {f['caveat']}"]
    else:
        body.append("Not measured by this export (export from a run with `speclm export --run RUN --recommended` "
                    "for the test perplexity against the plain small model).")
    body += ["", "## Training costs", "", *_cost_lines(f.get("cost")), "", "## Data and licences", ""]
    lic = f.get("licences") or []
    if lic:
        body += ["| set | source | licence |", "|---|---|---|"]
        body += [f"| {x['set']} | {x['source']} | {x['licence']} |" for x in lic]
        body += ["", "The model's own licence is yours to choose within the terms of its training data."]
    else:
        body.append("Not recorded (export from a run with `--run RUN` for the licences of its corpus).")
    return "\n".join(front + body) + "\n"
