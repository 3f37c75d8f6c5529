"""LLaMA-Factory folders: the data file, the dataset_info.json its loader reads (with `columns`
and `tags` naming every field), and a README with the training line to run."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from datagen.export.rows import Row

# A small instruct model and its LLaMA-Factory template: the line runs as printed; swap both for yours.
MODEL, TEMPLATE = "Qwen/Qwen2.5-0.5B-Instruct", "qwen"
STAGE = {"sft": "sft", "preference": "dpo", "kto": "kto"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt", "system_tag": "system"}
DATA_FILE = "data.jsonl"


def record(row: Row, kind: str, layout: str) -> dict:
    if layout == "sharegpt":
        conv = [{"from": "human", "value": row.prompt}]
        if kind == "preference":
            return {"conversations": conv, "chosen": {"from": "gpt", "value": row.chosen}, "rejected": {"from": "gpt", "value": row.rejected}}
        rec: dict = {"conversations": [*conv, {"from": "gpt", "value": row.output}]}
    else:
        rec = {"instruction": row.instruction, "input": row.input}
        rec.update({"chosen": row.chosen, "rejected": row.rejected} if kind == "preference" else {"output": row.output})
    if kind == "kto":
        rec["kto_tag"] = row.label
    return rec


def dataset_info(name: str, kind: str, layout: str) -> dict:
    """The entry LLaMA-Factory's parser reads, every column named (its defaults change between versions)."""
    if layout == "sharegpt":
        entry: dict = {"file_name": DATA_FILE, "formatting": "sharegpt", "columns": {"messages": "conversations"}, "tags": dict(SHAREGPT_TAGS)}
    else:
        entry = {"file_name": DATA_FILE, "formatting": "alpaca", "columns": {"prompt": "instruction", "query": "input"}}
        if kind != "preference":
            entry["columns"]["response"] = "output"
    if kind == "preference":
        entry["ranking"] = True
        entry["columns"].update(chosen="chosen", rejected="rejected")
    if kind == "kto":
        entry["columns"]["kto_tag"] = "kto_tag"
    return {name: entry}


def train_line(folder: Path, name: str, kind: str) -> str:
    args = ["llamafactory-cli", "train", "--stage", STAGE[kind], "--do_train", "true",
            "--model_name_or_path", MODEL, "--template", TEMPLATE, "--finetuning_type", "lora",
            "--dataset_dir", str(folder.absolute()), "--dataset", name, "--cutoff_len", "1024",
            "--output_dir", f"saves/{name}-{STAGE[kind]}", "--per_device_train_batch_size", "2",
            "--gradient_accumulation_steps", "8", "--learning_rate", "1e-4", "--num_train_epochs", "3"]
    if kind != "sft":
        args += ["--pref_beta", "0.1"]
    return " ".join(shlex.quote(a) for a in args)


def readme(name: str, kind: str, layout: str, line: str, rows: int) -> str:
    return "\n".join([
        f"# {name}: LLaMA-Factory dataset ({layout} layout, {STAGE[kind]})", "",
        f"{rows} rows in `{DATA_FILE}`, described in `dataset_info.json` under the name `{name}`. "
        "Point LLaMA-Factory at this folder with `--dataset_dir` and at the entry with `--dataset`:", "",
        "```sh", line, "```", "",
        f"Swap `--model_name_or_path` and `--template` for your model (here {MODEL} with its `{TEMPLATE}` template). "
        "To train on it beside other datasets, copy the entry into your own `dataset_info.json` and give "
        f"`file_name` as a path to `{DATA_FILE}`.", "",
        "How the data was made (runs, model, seeds, prompts, threshold, cost, review counts): `provenance.json`.", ""])


def write(folder: Path, rows, *, name: str, kind: str, layout: str, final: Path) -> str:
    """Fill `folder` (renamed to `final` afterwards); returns the training line."""
    from datagen.export.files import write_text

    write_text(folder / DATA_FILE, (json.dumps(record(r, kind, layout), ensure_ascii=False) + "\n" for r in rows))
    write_text(folder / "dataset_info.json", [json.dumps(dataset_info(name, kind, layout), indent=2) + "\n"])
    return train_line(final, name, kind)
