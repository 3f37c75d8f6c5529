"""Training data: read exported files and folders (LLaMA-Factory, Hugging Face), render dialogs with a template, tokenize with label masks, batch.

Every record becomes a dialog: an optional system text and alternating user/assistant turns.
Alpaca records ({instruction, input, output}) are one exchange; sharegpt records
(`conversations` with from/value or `messages` with role/content) may hold many, and every
assistant turn is trained in the same pass.

Labels are -100 everywhere except assistant tokens, and are stored already shifted by one
(`targets[t]` is the token that position t must predict), so a batch is ready for a plain
cross-entropy and packing never lets the last token of one sample predict the next sample.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from datagen import files
from datagen.errors import TrainError
from train.templates import Template

IGNORE = -100
ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
        "model": "assistant", "chatgpt": "assistant", "system": "system"}


@dataclass
class Dialog:
    turns: list[tuple[str, str]]  # (user, assistant) pairs
    system: str | None = None


# -- reading -----------------------------------------------------------------------------------

def read_records(path: str | Path) -> list[dict]:
    """A JSON array (alpaca export), a JSON object holding one, or JSON lines."""
    p = Path(path)
    if not p.is_file():
        raise TrainError(f"data file not found: {p}")
    text = files.read_text(p, TrainError)
    if not text.strip():
        raise TrainError(f"data file is empty: {p}")
    stripped = text.lstrip()
    if stripped.startswith("[") or (p.suffix == ".json" and stripped.startswith("{") and "\n{" not in stripped.strip()):
        data = files.parse_json(text, p, TrainError)
        if isinstance(data, dict):  # {"data": [...]} or a single record
            data = next((v for v in data.values() if isinstance(v, list)), [data])
        if not isinstance(data, list):
            raise TrainError(f"{p}: expected a JSON array of records")
        return data
    return [rec for _, rec in files.read_json_lines(text, p, TrainError)]


def to_dialog(rec, where: str) -> Dialog:
    if not isinstance(rec, dict):
        raise TrainError(f"{where}: a record must be a JSON object")
    if "conversations" in rec or "messages" in rec:
        msgs = rec.get("conversations") or rec.get("messages") or []
        system = rec.get("system")
        turns: list[tuple[str, str]] = []
        pending: str | None = None
        for m in msgs:
            if not isinstance(m, dict):
                raise TrainError(f"{where}: each message must be an object")
            role = ROLE.get(str(m.get("from", m.get("role", ""))).lower())
            text = m.get("value", m.get("content"))
            if role is None or not isinstance(text, str):
                raise TrainError(f"{where}: message needs from/value or role/content, got {sorted(m)}")
            if role == "system":
                system = text
            elif role == "user":
                if pending is not None:  # two user messages in a row: keep them as one turn
                    pending += "\n" + text
                else:
                    pending = text
            else:
                if pending is None:
                    raise TrainError(f"{where}: an assistant message must follow a user message")
                turns.append((pending, text))
                pending = None
        if not turns:
            raise TrainError(f"{where}: conversation has no user/assistant exchange")
        return Dialog(turns, system)
    if isinstance(rec.get("prompt"), str) and isinstance(rec.get("completion"), str):  # TRL's prompt/completion
        return Dialog([(rec["prompt"], rec["completion"])], rec.get("system"))
    if "instruction" in rec and "output" in rec:
        if not (isinstance(rec["instruction"], str) and isinstance(rec["output"], str) and isinstance(rec.get("input") or "", str)):
            raise TrainError(f"{where}: instruction, input and output must be strings")
        inp = (rec.get("input") or "").strip()
        prompt = rec["instruction"] + (f"\n\n{inp}" if inp else "")  # as datagen's sharegpt export joins them
        history = [(h[0], h[1]) for h in rec.get("history") or []]
        return Dialog([*history, (prompt, rec["output"])], rec.get("system"))
    raise TrainError(f"{where}: expected alpaca fields (instruction, input, output) or conversations/messages")


# -- folders: a LLaMA-Factory dataset_dir or a Hugging Face dataset folder ------------------------

LF_ALPACA = {"prompt": "instruction", "query": "input", "response": "output", "system": None, "history": None}
LF_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt", "system_tag": "system"}


def _front_matter(readme: Path) -> dict:
    import yaml

    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError as exc:
        raise TrainError(f"{readme}: the YAML front matter does not parse: {str(exc).splitlines()[0]}") from None
    return meta if isinstance(meta, dict) else {}


def _data_files(folder: Path, patterns: list[str], where: str) -> list[Path]:
    files: list[Path] = []
    for pat in patterns:
        found = sorted(p for p in folder.glob(pat) if p.is_file())
        if not found:
            raise TrainError(f"{where}: no data file matches {pat!r} in {folder}")
        files += found
    bad = [p.name for p in files if p.suffix not in (".json", ".jsonl")]
    if bad:
        raise TrainError(f"{where}: train reads JSON and JSON lines data files, not {', '.join(bad)}")
    return files


def _lf_records(folder: Path) -> list[dict]:
    """A LLaMA-Factory dataset_dir with one entry, mapped through its `columns` and `tags` to alpaca or sharegpt fields."""
    where = f"{folder / 'dataset_info.json'}"
    try:
        info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrainError(f"malformed JSON in {where}: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(info, dict) or len(info) != 1:
        names = ", ".join(info) if isinstance(info, dict) else "none"
        raise TrainError(f"{where} must describe exactly one dataset for train to read (it has: {names})")
    name, entry = next(iter(info.items()))
    if not isinstance(entry, dict) or "file_name" not in entry:
        raise TrainError(f"{where}: dataset {name!r} has no file_name (train reads local files only)")
    if entry.get("ranking") or "kto_tag" in (entry.get("columns") or {}):
        raise TrainError(f"{where}: dataset {name!r} is preference data (ranking/kto_tag); train qlora trains on instruction data")
    target = folder / entry["file_name"]
    files = _data_files(target, ["*.json", "*.jsonl"], where) if target.is_dir() else [target]
    recs = [r for f in files for r in read_records(f)]
    cols = entry.get("columns") or {}
    if entry.get("formatting", "alpaca") == "sharegpt":
        tags = {**LF_TAGS, **(entry.get("tags") or {})}
        roles = {tags["user_tag"]: "human", tags["assistant_tag"]: "gpt", tags["system_tag"]: "system"}
        msgs, system = cols.get("messages", "conversations"), cols.get("system")
        out = []
        for r in recs:
            conv = [{"from": roles.get(m.get(tags["role_tag"]), m.get(tags["role_tag"])), "value": m.get(tags["content_tag"])}
                    for m in (r.get(msgs) or []) if isinstance(m, dict)] if isinstance(r, dict) else r
            out.append({"conversations": conv, **({"system": r[system]} if system and r.get(system) else {})} if isinstance(r, dict) else r)
        return out
    names = {**LF_ALPACA, **cols}
    return [{"instruction": r.get(names["prompt"]), "input": r.get(names["query"]) or "", "output": r.get(names["response"]),
             **({"system": r[names["system"]]} if names["system"] and r.get(names["system"]) else {}),
             **({"history": r[names["history"]]} if names["history"] and r.get(names["history"]) else {})}
            if isinstance(r, dict) else r for r in recs]


def _hf_records(folder: Path) -> list[dict]:
    """A Hugging Face dataset folder: the train split of the card's first config (what load_dataset(DIR) reads)."""
    readme = folder / "README.md"
    configs = _front_matter(readme).get("configs") if readme.is_file() else None
    if not configs:
        raise TrainError(f"{folder}: neither a LLaMA-Factory folder (dataset_info.json) nor a Hugging Face dataset "
                         "folder (README.md naming its data files under `configs`)")
    config = next((c for c in configs if c.get("config_name") == "default"), configs[0])
    data_files = config.get("data_files")
    if isinstance(data_files, (str, dict)):
        data_files = [data_files]
    splits: dict[str, list[str]] = {}
    for d in data_files or []:
        if isinstance(d, str):
            splits.setdefault("train", []).append(d)
        else:
            paths = d.get("path")
            splits.setdefault(d.get("split", "train"), []).extend([paths] if isinstance(paths, str) else paths or [])
    patterns = splits.get("train") or next(iter(splits.values()), [])
    if not patterns:
        raise TrainError(f"{readme}: config {config.get('config_name')!r} names no data files")
    recs = [r for f in _data_files(folder, patterns, str(readme)) for r in read_records(f)]
    first = recs[0] if recs and isinstance(recs[0], dict) else {}
    if {"chosen", "rejected"} <= first.keys() or {"completion", "label"} <= first.keys():
        raise TrainError(f"{folder}: preference data (chosen/rejected or KTO labels); train qlora trains on instruction data")
    return recs


def read_folder(path: str | Path) -> list[dict]:
    folder = Path(path)
    if (folder / "dataset_info.json").is_file():
        return _lf_records(folder)
    return _hf_records(folder)


def load_dialogs(path: str | Path) -> list[Dialog]:
    recs = read_folder(path) if Path(path).is_dir() else read_records(path)
    dialogs = [to_dialog(r, f"{path} record {i + 1}") for i, r in enumerate(recs)]
    if not dialogs:
        raise TrainError(f"no records in {path}")
    return dialogs


# -- tokenizing --------------------------------------------------------------------------------

def special_texts(tok, template: Template) -> tuple[str, str]:
    bos = tok.bos_token or ""
    if template.name == "baichuan":  # baichuan is trained without BOS
        bos = ""
    return bos, tok.eos_token or ""


def encode_pieces(tok, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    train_mask: list[int] = []
    for text, trained in pieces:
        piece = tok(text, add_special_tokens=False)["input_ids"] if text else []
        ids += piece
        train_mask += [int(trained)] * len(piece)
    return ids, train_mask


def encode_dialog(tok, template: Template, dialog: Dialog, max_len: int) -> dict | None:
    """input_ids and shifted targets for one dialog, cut at max_len; None if nothing is left to train."""
    bos, eos = special_texts(tok, template)
    pieces = []
    for i, (user, reply) in enumerate(dialog.turns):
        pieces.append((template.user_piece(user, first=i == 0, system=dialog.system, bos=bos, eos=eos), False))
        pieces.append((template.assistant_piece(reply, bos=bos, eos=eos), True))
    ids, mask = encode_pieces(tok, pieces)
    ids, mask = ids[:max_len], mask[:max_len]
    targets = [t if m else IGNORE for t, m in zip(ids[1:], mask[1:])] + [IGNORE]
    if all(t == IGNORE for t in targets):
        return None
    return {"input_ids": ids, "targets": targets}


def encode_prompt(tok, template: Template, history: list[tuple[str, str]], user: str, system: str | None = None) -> list[int]:
    """The ids a chat turn starts from: the same pieces as training, up to the assistant's reply."""
    bos, eos = special_texts(tok, template)
    pieces = []
    for i, (u, a) in enumerate(history):
        pieces.append((template.user_piece(u, first=i == 0, system=system, bos=bos, eos=eos), False))
        pieces.append((template.assistant_piece(a, bos=bos, eos=eos), True))
    pieces.append((template.user_piece(user, first=not history, system=system, bos=bos, eos=eos), False))
    return encode_pieces(tok, pieces)[0]


def encode_all(tok, template: Template, dialogs: list[Dialog], max_len: int) -> list[dict]:
    samples = [s for s in (encode_dialog(tok, template, d, max_len) for d in dialogs) if s is not None]
    if not samples:
        raise TrainError("no sample has a trainable token left (prompts longer than --max-seq-length?)")
    return samples


# -- batching ----------------------------------------------------------------------------------

def pad_batch(samples: list[dict], pad_id: int) -> dict:
    """Right padding to the longest sample; pads are masked out of attention and loss."""
    n = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), n), pad_id, dtype=torch.long)
    tgt = torch.full((len(samples), n), IGNORE, dtype=torch.long)
    att = torch.zeros((len(samples), n), dtype=torch.long)
    for i, s in enumerate(samples):
        k = len(s["input_ids"])
        ids[i, :k] = torch.tensor(s["input_ids"])
        tgt[i, :k] = torch.tensor(s["targets"])
        att[i, :k] = 1
    return {"input_ids": ids, "targets": tgt, "attention_mask": att}


def pack_rows(samples: list[dict], row_len: int) -> list[list[dict]]:
    """Group samples into rows of at most row_len tokens (first fit, longest first)."""
    order = sorted(range(len(samples)), key=lambda i: -len(samples[i]["input_ids"]))
    rows: list[list[dict]] = []
    room: list[int] = []
    for i in order:
        n = len(samples[i]["input_ids"])
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(samples[i])
                room[r] -= n
                break
        else:
            rows.append([samples[i]])
            room.append(row_len - n)
    return rows


def packed_batch(rows: list[list[dict]], pad_to: int = 0) -> dict:
    """Rows of concatenated samples, no padding inside a row; position_ids restart at 0 per sample.

    `seq_lens` (per row) lets the model build a block-diagonal causal mask, so no token attends
    to another sample. Rows of one batch are right-padded to the longest row with a final dummy
    segment that has no targets.
    """
    n = max(pad_to, max(sum(len(s["input_ids"]) for s in row) for row in rows))  # pad_to: fixed shapes for torch.compile
    ids = torch.zeros((len(rows), n), dtype=torch.long)
    tgt = torch.full((len(rows), n), IGNORE, dtype=torch.long)
    pos = torch.zeros((len(rows), n), dtype=torch.long)
    seg = torch.zeros((len(rows), n), dtype=torch.long)  # segment number of each token, for the mask
    for r, row in enumerate(rows):
        at = 0
        for j, s in enumerate(row):
            k = len(s["input_ids"])
            ids[r, at:at + k] = torch.tensor(s["input_ids"])
            tgt[r, at:at + k] = torch.tensor(s["targets"])
            pos[r, at:at + k] = torch.arange(k)
            seg[r, at:at + k] = j + 1
            at += k
        if at < n:  # the tail pad is a segment of its own (number 0): it attends only to itself
            pos[r, at:] = torch.arange(n - at)
    return {"input_ids": ids, "targets": tgt, "position_ids": pos, "segments": seg}


class Batches:
    """An endless, seeded stream of micro-batches, over epochs; its position can be saved and restored."""

    def __init__(self, samples: list[dict], *, batch_size: int, pad_id: int, packing: bool, row_len: int, seed: int, fixed: bool = False):
        self.samples, self.batch_size, self.pad_id, self.fixed = samples, batch_size, pad_id, fixed
        self.packing, self.row_len, self.seed = packing, row_len, seed
        self.units = pack_rows(samples, row_len) if packing else [[s] for s in samples]
        self.epoch, self.index = 0, 0
        self._order = self._shuffle()

    def _shuffle(self) -> list[int]:
        order = list(range(len(self.units)))
        random.Random(self.seed + self.epoch).shuffle(order)
        return order

    @property
    def per_epoch(self) -> int:
        return -(-len(self.units) // self.batch_size)

    def next(self) -> dict:
        if self.index >= len(self._order):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._shuffle()
        chosen = [self.units[i] for i in self._order[self.index:self.index + self.batch_size]]
        self.index += self.batch_size
        if self.packing:
            return packed_batch(chosen, self.row_len if self.fixed else 0)
        return pad_batch([u[0] for u in chosen], self.pad_id)

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = self._shuffle()
