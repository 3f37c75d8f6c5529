"""Export of kept samples: formats, filters, placeholders, and all-or-nothing writes."""

from __future__ import annotations

import json
import os
import stat

import pytest

from conftest import core_cli, core_one_line_error
from datagen import storage
from datagen.errors import InputError
from datagen.export import export
from datagen.records import Candidate, Instance, Status


def add(engine, run_id, lang, instruction, status, instances):
    c = Candidate(instruction=instruction, lang=lang)
    c.sample_id = storage.add_sample(engine, run_id, c)
    c.status, c.instances = status, [Instance(input=i, output=o) for i, o in instances]
    c.reason = "too_short" if status is Status.rejected else None
    storage.finish_sample(engine, c.sample_id, c)


@pytest.fixture
def core_export_db(tmp_path):
    path = tmp_path / "export.db"
    engine = storage.connect(str(path))
    en, _ = storage.open_run(engine, "run-en", lang="en", api="chat", model="stub", target=3, config={})
    zh, _ = storage.open_run(engine, "run-zh", lang="zh", api="chat", model="stub", target=2, config={})
    add(engine, en.id, "en", "Write a haiku about rain.", Status.accepted, [("<noinput>", "Rain on the roof."), ("N/A", "Soft rain.")])
    add(engine, en.id, "en", "Translate to French.", Status.approved, [("Good morning", "Bonjour")])
    add(engine, en.id, "en", "Bad one.", Status.rejected, [("x", "y")])
    add(engine, en.id, "en", "Thrown out by a reviewer.", Status.discarded, [("x", "y")])
    c = Candidate(instruction="Still pending.", lang="en")
    storage.add_sample(engine, en.id, c)
    add(engine, zh.id, "zh", "把句子翻译成英文。", Status.accepted, [("你好", "Hello"), ("<无输入>", "无需输入的回答")])
    yield path, engine
    storage.dispose_all()


def read(path, fmt):
    text = path.read_text("utf-8")
    return json.loads(text) if fmt == "alpaca" else [json.loads(line) for line in text.splitlines()]


def test_alpaca_all_kept_with_placeholders_cleared(core_export_db, tmp_path):
    _, engine = core_export_db
    out = tmp_path / "out.json"
    assert export(engine, out) == 5
    assert read(out, "alpaca") == [
        {"instruction": "Write a haiku about rain.", "input": "", "output": "Rain on the roof."},
        {"instruction": "Write a haiku about rain.", "input": "", "output": "Soft rain."},
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "把句子翻译成英文。", "input": "你好", "output": "Hello"},
        {"instruction": "把句子翻译成英文。", "input": "", "output": "无需输入的回答"},
    ]
    assert "把句子" in out.read_text("utf-8")  # not \u-escaped


def test_jsonl_and_sharegpt(core_export_db, tmp_path):
    _, engine = core_export_db
    assert export(engine, tmp_path / "o.jsonl", fmt="jsonl", run="run-en") == 3
    assert [r["output"] for r in read(tmp_path / "o.jsonl", "jsonl")] == ["Rain on the roof.", "Soft rain.", "Bonjour"]
    assert export(engine, tmp_path / "o.sg.jsonl", fmt="sharegpt", run="run-en") == 3
    rows = read(tmp_path / "o.sg.jsonl", "sharegpt")
    assert rows[0] == {"conversations": [{"from": "human", "value": "Write a haiku about rain."}, {"from": "gpt", "value": "Rain on the roof."}]}
    assert rows[2]["conversations"][0]["value"] == "Translate to French.\n\nGood morning"


def test_filters_status_lang_run(core_export_db, tmp_path):
    _, engine = core_export_db
    out = tmp_path / "o.json"
    assert export(engine, out, status="approved") == 1
    assert [r["instruction"] for r in read(out, "alpaca")] == ["Translate to French."]
    assert export(engine, out, lang="zh") == 2
    assert {r["instruction"] for r in read(out, "alpaca")} == {"把句子翻译成英文。"}
    assert export(engine, out, run="run-zh", lang="en") == 0
    assert read(out, "alpaca") == []


def test_unknown_run_and_format(core_export_db, tmp_path):
    _, engine = core_export_db
    with pytest.raises(InputError, match="no run named 'nope'"):
        export(engine, tmp_path / "o.json", run="nope")
    with pytest.raises(InputError, match="unknown format"):
        export(engine, tmp_path / "o.json", fmt="csv")
    assert list(tmp_path.glob("o.json*")) == []


def test_failed_export_leaves_existing_file_and_no_temp(core_export_db, tmp_path):
    _, engine = core_export_db
    out = tmp_path / "keep.json"
    out.write_text("old contents", encoding="utf-8")
    for kwargs in ({"fmt": "csv"}, {"status": "bogus"}, {"run": "nope"}, {"lang": "fr"}):
        with pytest.raises(InputError):
            export(engine, out, **kwargs)
        assert out.read_text("utf-8") == "old contents"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("export.db")) == ["keep.json"]


def test_cli_export_and_errors(core_export_db, tmp_path):
    db, _ = core_export_db
    out = tmp_path / "cli.jsonl"
    ok = core_cli("export", "--db", str(db), "--out", str(out), "--format", "jsonl", "--lang", "en", "--status", "approved")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"wrote 1 records to {out}"
    assert read(out, "jsonl") == [{"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}]

    assert "no run named 'nope'" in core_one_line_error(core_cli("export", "--db", str(db), "--out", str(out), "--run", "nope"))
    before = out.read_bytes()
    assert "unknown format" in core_one_line_error(core_cli("export", "--db", str(db), "--out", str(out), "--format", "xml"))
    assert out.read_bytes() == before
    assert "unknown language 'fr'" in core_one_line_error(core_cli("export", "--db", str(db), "--out", str(out), "--lang", "fr"))
    assert out.read_bytes() == before  # refused before the file was touched
    assert "is a directory" in core_one_line_error(core_cli("export", "--db", str(db), "--out", str(tmp_path)))
    missing = tmp_path / "no" / "such" / "dir" / "o.json"
    assert "output directory does not exist" in core_one_line_error(core_cli("export", "--db", str(db), "--out", str(missing)))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_file_mode_follows_umask(core_export_db, tmp_path):
    # The temp file behind the atomic write is 0600; the export a user shares must not be.
    _, engine = core_export_db
    old = os.umask(0o022)
    try:
        export(engine, tmp_path / "shared.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o644


def test_dashboard_export_is_byte_identical_to_the_cli(core_export_db, tmp_path):
    """One exporter: the API streams exactly the bytes `datagen export` writes for the same selection."""
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.main import create_app
    from conftest import TOKEN

    db, _ = core_export_db
    with TestClient(create_app(Settings(db_url=str(db), token=TOKEN)), base_url="http://localhost") as client:
        for cli_args, query in (
            ([], ""),
            (["--run", "run-en"], "?run=run-en"),
            (["--status", "approved"], "?status=approved"),
            (["--lang", "zh"], "?lang=zh&status=accepted&status=approved"),
        ):
            out = tmp_path / "cli.json"
            r = core_cli("export", "--db", str(db), "--out", str(out), *cli_args)
            assert r.returncode == 0, r.stderr
            api = client.get("/api/export" + query)
            assert api.status_code == 200
            assert api.content == out.read_bytes(), cli_args
            assert json.loads(api.content)  # and not empty: a real selection
