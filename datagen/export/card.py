"""How an export was made (provenance.json) and the Hugging Face dataset card (README.md) that says it.

The figures come from the database at export time: the runs behind the rows (model, seeds, prompt
file, threshold, cost, dates) and the audit log of the selected samples, counted by action.
"""

from __future__ import annotations

import hashlib
import html
import json
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import yaml

from datagen import __version__ as DATAGEN_VERSION
from datagen.config import THRESHOLD
from datagen.seeds import default_seed_path
from datagen.storage import run_stats
from datagen.storage.exports import audit_counts, runs_by_id
from datagen.storage.queries import SampleFilter

TASK = {"sft": "instruction tuning (SFT)", "preference": "preference pairs (DPO)", "kto": "binary feedback (KTO)"}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _file_info(path: Path | None, builtin: str) -> dict:
    if path is None:
        return {"file": builtin, "sha256": None}
    try:
        return {"file": str(path), "sha256": _sha(Path(path).read_bytes())}
    except OSError:
        return {"file": str(path), "sha256": None, "missing": True}


def run_info(engine, run) -> dict:
    cfg = json.loads(run.config or "{}")
    pipe = cfg.get("pipeline") if isinstance(cfg.get("pipeline"), dict) else {}
    st = run_stats(engine, run.id)
    seeds = cfg.get("seeds")
    seed_file = _file_info(Path(seeds) if seeds else default_seed_path(run.lang), "")
    if not seeds:
        seed_file["file"] = f"built-in {run.lang} pool"
    if seeds is None or Path(seeds).is_file():
        try:
            seed_file["tasks"] = sum(1 for line in Path(seeds or default_seed_path(run.lang)).read_text("utf-8").splitlines() if line.strip())
        except OSError:
            pass
    prompts = cfg.get("prompts")
    if prompts:
        prompt_file = _file_info(Path(prompts), "")
    else:
        raw = resources.files("datagen").joinpath("prompts", f"{run.lang}.toml").read_bytes()
        prompt_file = {"file": f"built-in {run.lang}.toml", "sha256": _sha(raw)}
    review, reviewed = audit_counts(engine, SampleFilter(run_id=run.id))
    return {
        "name": run.name, "lang": run.lang, "api": run.api, "model": run.model, "state": run.state,
        "created_at": run.created_at.isoformat(), "updated_at": run.updated_at.isoformat(),
        "target": run.target, "kept": st.kept, "rejected": st.by_status.get("rejected", 0),
        "requests": st.requests, "tokens_in": st.tokens_in, "tokens_out": st.tokens_out, "cost_usd": round(st.cost, 6),
        "seeds": seed_file, "prompts": prompt_file,
        "threshold": pipe.get("threshold", THRESHOLD), "max_instances": pipe.get("max_instances"),
        "temperature": pipe.get("temperature"), "random_seed": pipe.get("random_seed"),
        "review": {"audit": review, "samples": reviewed},
    }


def provenance(engine, *, name: str, kind: str, fmt: str, layout: str, selection, f: SampleFilter, counts: dict) -> dict:
    """Everything the card says, as data: written beside the card as provenance.json."""
    review, reviewed = audit_counts(engine, f)
    runs = [run_info(engine, r) for r in runs_by_id(engine, sorted(counts["run_ids"]))]
    return {
        "generator": f"datagen {DATAGEN_VERSION}",
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "name": name, "kind": kind, "format": fmt, "layout": layout,
        "selection": selection.describe(),
        "rows": counts["rows"], "samples": len(counts["samples"]), "by_lang": dict(sorted(counts["by_lang"].items())),
        **({"labels": counts["labels"]} if kind == "kto" else {}),
        "review": {"audit": review, "samples": reviewed},
        "cost_usd": round(sum(r["cost_usd"] for r in runs), 6),
        "runs": runs,
    }


def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
    return next((label for bound, label in bounds if n < bound), "100M<n<1B")


def md(value) -> str:
    """A value in a Markdown table cell: run and model names are the user's, texts the model's."""
    return html.escape(str(value if value is not None else "-")).replace("|", "\\|").replace("\n", " ")


FIELDS = {
    ("sft", "alpaca"): "`instruction`, `input` (may be empty), `output`: one row per instance of each sample.",
    ("sft", "sharegpt"): "`conversations`: a human turn (instruction, a blank line, the input) and a gpt turn.",
    ("preference", "alpaca"): "`prompt`, `chosen` (the reviewer's edited answer), `rejected` (the model's answer before the first edit).",
    ("kto", "alpaca"): "`prompt`, `completion`, `label` (true: a reviewer approved the sample, false: rejected it).",
}


def dataset_card(p: dict, data_files: list[str]) -> str:
    meta = {
        "pretty_name": p["name"],
        "language": sorted(p["by_lang"]),
        "size_categories": [size_category(p["rows"])],
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "self-instruct", "datagen", *({"preference": ["dpo"], "kto": ["kto"]}.get(p["kind"], []))],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": f} for f in data_files]}],
    }
    front = yaml.safe_dump(meta, allow_unicode=True, sort_keys=False)
    # The license is the user's call: the seed tasks' and the model's terms apply to this data.
    front += "# license: (choose one: https://huggingface.co/docs/hub/repositories-licenses)\n"
    rv = p["review"]["audit"]
    lines = [
        "---", front.rstrip("\n"), "---", "",
        f"# {md(p['name'])}", "",
        f"Machine-written {TASK[p['kind']]} data made with datagen's self-instruct pipeline: "
        f"{p['rows']} rows from {p['samples']} samples ({', '.join(f'{k}: {v}' for k, v in p['by_lang'].items())}).",
        "", "## Load", "", "```python", "from datasets import load_dataset", "",
        f'ds = load_dataset("path/to/this/folder")  # or the Hub id it was pushed to', "```", "",
        "## Fields", "", FIELDS.get((p["kind"], p["layout"]), FIELDS[(p["kind"], "alpaca")]), "",
        "## How it was made", "",
        f"Exported {p['exported_at']} by {p['generator']}; selection: "
        + ", ".join(f"{k}={md(v)}" for k, v in p["selection"].items()) + f". Total generation cost of the runs: ${p['cost_usd']:.4f}.",
        "",
        "| run | lang | model (api) | seeds | prompts | threshold | kept / target | rejected | requests | tokens in / out | cost $ | started | last change |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in p["runs"]:
        seeds = r["seeds"]["file"] + (f" ({r['seeds']['tasks']} tasks)" if "tasks" in r["seeds"] else "")
        seeds += f" sha256:{r['seeds']['sha256']}" if r["seeds"].get("sha256") else ""
        prompts = r["prompts"]["file"] + (f" sha256:{r['prompts']['sha256']}" if r["prompts"].get("sha256") else "")
        lines.append("| " + " | ".join(md(v) for v in (
            r["name"], r["lang"], f"{r['model']} ({r['api']})", seeds, prompts, r["threshold"], f"{r['kept']} / {r['target']}",
            r["rejected"], r["requests"], f"{r['tokens_in']} / {r['tokens_out']}", f"{r['cost_usd']:.4f}",
            r["created_at"][:19], r["updated_at"][:19])) + " |")
    lines += ["", "Prompt and seed files are named with the SHA-256 of their contents at export time.", "",
              "## Review", "",
              f"Audit log of the selected samples: {p['review']['samples']} samples have review events.", "",
              "| action | events |", "|---|---|"]
    lines += [f"| {md(k)} | {v} |" for k, v in rv.items()] or ["| (none) | 0 |"]
    if p["kind"] == "kto":
        lines += ["", f"Labels: {p['labels']['true']} rows approved (true), {p['labels']['false']} rows rejected (false)."]
    if p["kind"] == "preference":
        lines += ["", "A pair is an instance whose answer a reviewer rewrote; a sample edited several times gives its "
                      "first text (rejected) and its last (chosen)."]
    lines += ["", "Per-run review counts and every figure above: `provenance.json`.", ""]
    return "\n".join(lines)
