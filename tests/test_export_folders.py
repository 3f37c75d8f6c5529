"""Export folders as trainers read them: Hugging Face (load_dataset(DIR), the card), LLaMA-Factory
(dataset_info.json against its file), preference and KTO data from a review session over the
REST API (SQLite and Postgres), all-or-nothing folder writes, and --push-to-hub with no way out."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from sqlmodel import Session

from conftest import AUTH, TOKEN, build_db, core_cli, core_env, core_free_port, core_one_line_error
from datagen import storage
from datagen.errors import InputError
from datagen.export import Selection, lines, write
from test_export import core_export_db  # noqa: F401  (fixture)
from test_postgres import core_pg_url  # noqa: F401  (fixture)


def load(folder: Path, tmp_path: Path):
    """What a user gets from `datasets.load_dataset(DIR)`, no other argument."""
    import datasets

    ds = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))
    assert list(ds) == ["train"]
    return ds["train"]


def front_matter(readme: Path) -> dict:
    text = readme.read_text("utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text[4:text.index("\n---\n", 4)])


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


# --- Hugging Face folders ------------------------------------------------------------------------


@pytest.mark.parametrize("sel, runs", [(Selection(), {"run-en", "run-zh"}), (Selection(status="approved"), {"run-en"}),
                                       (Selection(lang="zh"), {"run-zh"}), (Selection(run="run-en"), {"run-en"})])
def test_hf_folder_loads_as_the_selection(core_export_db, tmp_path, sel, runs):  # noqa: F811
    _, engine = core_export_db
    out = tmp_path / "nightly-hf"
    res = write(engine, out, sel, fmt="hf")
    want = [json.loads(line) for line in lines(engine, sel.to_filter(engine))]  # the one-file export of the same selection
    ds = load(out, tmp_path)
    assert res.rows == ds.num_rows == len(want) > 0
    assert ds.column_names == ["instruction", "input", "output"]
    assert ds.to_list() == want
    meta = front_matter(out / "README.md")
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train.jsonl"}]}]
    assert meta["language"] == sorted({"en" if r["instruction"].isascii() else "zh" for r in want})
    assert meta["size_categories"] == ["n<1K"] and meta["task_categories"] == ["text-generation"]
    assert "license" not in meta and "# license:" in (out / "README.md").read_text("utf-8")  # the user's to fill in
    prov = json.loads((out / "provenance.json").read_text("utf-8"))
    assert prov["rows"] == len(want) and prov["selection"] == sel.describe()
    assert {r["name"] for r in prov["runs"]} == runs


def test_hf_chinese_sharegpt_and_card_figures(core_export_db, tmp_path):  # noqa: F811
    db, engine = core_export_db
    out = tmp_path / "zh"
    r = core_cli("export", "--db", str(db), "--format", "hf", "--layout", "sharegpt", "--lang", "zh", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote 2 records to {out}"
    ds = load(out, tmp_path)
    assert ds.to_list() == [
        {"conversations": [{"from": "human", "value": "把句子翻译成英文。\n\n你好"}, {"from": "gpt", "value": "Hello"}]},
        {"conversations": [{"from": "human", "value": "把句子翻译成英文。"}, {"from": "gpt", "value": "无需输入的回答"}]},
    ]
    assert "把句子" in (out / "data" / "train.jsonl").read_text("utf-8")  # not \u-escaped
    card = (out / "README.md").read_text("utf-8")
    assert front_matter(out / "README.md")["language"] == ["zh"]
    # How it was made: the run's model, seeds, prompt file, threshold, counts, cost, date.
    assert "| run-zh | zh | stub (chat) | built-in zh pool (175 tasks) sha256:" in card
    assert "built-in zh.toml sha256:" in card and "| 0.7 | 1 / 2 |" in card
    assert "2 rows from 1 samples (zh: 2)" in card and "Exported 20" in card


# --- LLaMA-Factory folders -----------------------------------------------------------------------


def check_dataset_info(folder: Path) -> tuple[dict, list[dict]]:
    """dataset_info.json names a file that is there and every column and tag its records use."""
    info = json.loads((folder / "dataset_info.json").read_text("utf-8"))
    (name, entry), = info.items()
    recs = jsonl(folder / entry["file_name"])
    cols = entry["columns"]
    for rec in recs:
        assert set(cols.values()) == set(rec), (cols, rec)
        if entry["formatting"] == "sharegpt":
            tags = entry["tags"]
            for m in rec[cols["messages"]]:
                assert set(m) == {tags["role_tag"], tags["content_tag"]}
                assert m[tags["role_tag"]] in (tags["user_tag"], tags["assistant_tag"])
    return entry, recs


@pytest.mark.parametrize("layout", ["alpaca", "sharegpt"])
def test_llamafactory_folder_matches_its_dataset_info(core_export_db, tmp_path, layout):  # noqa: F811
    db, engine = core_export_db
    out = tmp_path / "nightly"
    r = core_cli("export", "--db", str(db), "--format", "llama-factory", "--layout", layout, "--out", str(out) + "/")
    assert r.returncode == 0, r.stderr
    entry, recs = check_dataset_info(out)
    assert entry["formatting"] == layout and len(recs) == 5
    want = [json.loads(x) for x in lines(engine, Selection().to_filter(engine), layout)]
    if layout == "alpaca":
        assert recs == want
        assert entry["columns"] == {"prompt": "instruction", "query": "input", "response": "output"}
    else:
        assert recs == want and recs[3]["conversations"][0]["value"] == "把句子翻译成英文。\n\n你好"
    line = r.stdout.splitlines()[1]
    assert line.startswith("train with: llamafactory-cli train --stage sft ")
    assert f"--dataset_dir {out} --dataset nightly " in line
    assert line.removeprefix("train with: ") in (out / "README.md").read_text("utf-8")


def test_folder_writes_are_all_or_nothing(core_export_db, tmp_path):  # noqa: F811
    _, engine = core_export_db
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="holds no datagen export"):
        write(engine, mine, fmt="hf")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    out = tmp_path / "ds"
    assert write(engine, out, fmt="hf").rows == 5
    first = (out / "data" / "train.jsonl").read_bytes()
    # An empty selection fails before the rename: the earlier export stands, no temp folder left.
    with pytest.raises(InputError, match="nothing to export"):
        write(engine, out, Selection(run="run-zh", lang="en"), fmt="hf")
    assert (out / "data" / "train.jsonl").read_bytes() == first
    assert write(engine, out, Selection(lang="zh"), fmt="llama-factory").rows == 2  # replaces the earlier export whole
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data.jsonl", "dataset_info.json", "provenance.json"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    for bad, msg in (({"fmt": "hf", "layout": "chat"}, "unknown layout"), ({"fmt": "alpaca", "kind": "kto"}, "written as jsonl"),
                     ({"fmt": "hf", "kind": "dpo"}, "unknown kind"), ({"fmt": "jsonl", "layout": "sharegpt"}, "--layout is for")):
        with pytest.raises(InputError, match=msg):
            write(engine, tmp_path / "x", **bad)
    assert not (tmp_path / "x").exists()


# --- Preference and KTO data from a review session ---------------------------------------------

EN_POEM, ZH_POEM = "Write a poem about the sea at night.", "请写一首关于秋天的诗。"


def review_session(c) -> None:
    """What a reviewer does on the dashboard, through the REST API (sample ids as conftest.build_db writes them)."""
    def ok(r):
        assert r.status_code == 200, r.text

    inst = lambda out, inp="some input": {"instances": [{"input": inp, "output": out}]}  # noqa: E731
    ok(c.patch("/api/samples/1", headers=AUTH, json=inst("Waves in the dark.")))  # edited twice: first and last text count
    ok(c.patch("/api/samples/1", headers=AUTH, json=inst("Moonlit waves fold into the dark sea.")))
    ok(c.post("/api/samples/1/approve", headers=AUTH, json={"force": True}))
    ok(c.post("/api/samples/3/approve", headers=AUTH, json={"force": True}))
    ok(c.post("/api/samples/4/reject", headers=AUTH))
    ok(c.post("/api/samples/8/approve", headers=AUTH, json={"force": True}))
    ok(c.post("/api/samples/8/undo", headers=AUTH))  # taken back: no label
    ok(c.post("/api/samples/9/reject", headers=AUTH))
    ok(c.patch("/api/samples/9", headers=AUTH, json=inst("Sleep, eat well, walk.")))  # edited after its rejection
    ok(c.patch("/api/samples/11", headers=AUTH, json={"instruction": "List five red fruits."}))  # the prompt alone: no pair
    ok(c.patch("/api/samples/13", headers=AUTH, json=inst("秋风起，落叶满山。")))
    ok(c.post("/api/samples/13/approve", headers=AUTH, json={"force": True}))


def audit_by_action(engine, sample_ids=None) -> dict:
    from datagen.storage import Audit

    with Session(engine) as s:
        q = select(Audit.action)
        if sample_ids is not None:
            q = q.where(Audit.sample_id.in_(sample_ids))
        return dict(Counter(s.execute(q).scalars()))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_preference_and_kto_exports_equal_the_review_session(backend, request, tmp_path):
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.main import create_app

    url = build_db(tmp_path / "review.db") if backend == "sqlite" else build_db(request.getfixturevalue("core_pg_url"))
    try:
        with TestClient(create_app(Settings(db_url=url, token=TOKEN, allowed_hosts=("testserver",)))) as c:
            review_session(c)
        engine = storage.connect(url)

        # DPO: the samples kept now that a reviewer rewrote (1 and 13); 9 was discarded, 11 changed only its prompt.
        pairs = write(engine, tmp_path / "dpo", fmt="hf", kind="preference")
        got = load(tmp_path / "dpo", tmp_path)
        assert got.column_names == ["prompt", "chosen", "rejected"]
        assert got.to_list() == [
            {"prompt": f"{EN_POEM}\n\nsome input", "chosen": "Moonlit waves fold into the dark sea.", "rejected": "output 0"},
            {"prompt": f"{ZH_POEM}\n\nsome input", "chosen": "秋风起，落叶满山。", "rejected": "output 0"},
        ]
        every = write(engine, tmp_path / "dpo-all", Selection(status="any"), fmt="hf", kind="preference")
        assert every.rows == 3 and load(tmp_path / "dpo-all", tmp_path)[1] == {
            "prompt": "Give three tips for staying healthy.\n\nsome input", "chosen": "Sleep, eat well, walk.", "rejected": "output 8"}

        # KTO: every standing approve/reject, with the text the sample had when it was decided.
        kto = write(engine, tmp_path / "kto", fmt="hf", kind="kto")
        got = load(tmp_path / "kto", tmp_path)
        assert got.column_names == ["prompt", "completion", "label"]
        assert got.to_list() == [
            {"prompt": f"{EN_POEM}\n\nsome input", "completion": "Moonlit waves fold into the dark sea.", "label": True},
            {"prompt": "Classify the sentiment of the following review as positive or negative.\n\nsome input", "completion": "output 2", "label": True},
            {"prompt": "Summarize the article in three sentences.", "completion": "output 3", "label": False},
            {"prompt": "Give three tips for staying healthy.\n\nsome input", "completion": "output 8", "label": False},  # rejected before the edit
            {"prompt": f"{ZH_POEM}\n\nsome input", "completion": "秋风起，落叶满山。", "label": True},
        ]

        # The cards count what the audit log holds, for the samples each export selected.
        log = audit_by_action(engine)
        # approve or force_approve: the API records which, by whether the run's filters pass the sample
        assert (log["edit"], log.get("approve", 0) + log.get("force_approve", 0), log["reject"], log["undo"]) == (5, 4, 2, 1)
        assert kto.provenance["review"]["audit"] == audit_by_action(engine)  # kto selects every state
        assert kto.provenance["labels"] == {"true": 3, "false": 2}
        kept_ids = [1, 3, 8, 11, 13]  # the kept samples with audit rows (8 is accepted again after the undo)
        assert pairs.provenance["review"]["audit"] == audit_by_action(engine, kept_ids)
        card = (tmp_path / "kto" / "README.md").read_text("utf-8")
        for action, n in audit_by_action(engine).items():
            assert f"| {action} | {n} |" in card
        assert "Labels: 3 rows approved (true), 2 rows rejected (false)." in card

        # The same data as LLaMA-Factory reads it.
        for kind, layout in (("preference", "alpaca"), ("preference", "sharegpt"), ("kto", "alpaca"), ("kto", "sharegpt")):
            out = tmp_path / f"lf-{kind}-{layout}"
            write(engine, out, fmt="llama-factory", kind=kind, layout=layout)
            info = json.loads((out / "dataset_info.json").read_text("utf-8"))[out.name]
            recs = jsonl(out / info["file_name"])
            assert info.get("ranking", False) is (kind == "preference")
            assert set(info["columns"].values()) == set(recs[0])
            if kind == "kto":
                assert [r["kto_tag"] for r in recs] == [True, True, False, False, True]
            else:
                chosen = [r["chosen"] if layout == "alpaca" else r["chosen"]["value"] for r in recs]
                assert chosen == ["Moonlit waves fold into the dark sea.", "秋风起，落叶满山。"]
    finally:
        storage.dispose_all()


# --- --push-to-hub with no token, no network --------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[str] = []

    def _any(self):
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_HEAD = _any

    def log_message(self, *a):
        pass


def test_push_to_hub_without_token_or_network_is_one_line_and_keeps_the_folder(core_export_db, tmp_path):  # noqa: F811
    db, _ = core_export_db
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hub = f"http://127.0.0.1:{server.server_address[1]}"
    base = core_env(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT=hub)  # no stored token there
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):  # in-process model tests set offline mode in this worker
        base.pop(name, None)
    try:
        out = tmp_path / "pushed"
        args = ("export", "--db", str(db), "--format", "hf", "--out", str(out), "--push-to-hub", "someone/nightly")
        cases = [
            (base, "no token"),
            ({**base, "HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_" + "x" * 34}, "offline mode"),
            ({**base, "HF_TOKEN": "hf_" + "x" * 34, "HF_ENDPOINT": f"http://127.0.0.1:{core_free_port()}"}, "push to someone/nightly failed"),
        ]
        for env, msg in cases:
            r = core_cli(*args, env=env)
            line = core_one_line_error(r)
            assert msg in line and f"the export is kept in {out}" in line, line
            assert r.stdout.startswith(f"wrote 5 records to {out}")
            assert len(jsonl(out / "data" / "train.jsonl")) == 5
        assert _Recorder.seen == []  # nothing reached the (stand-in) Hub
        bad = core_cli("export", "--db", str(db), "--format", "hf", "--out", str(tmp_path / "never"), "--push-to-hub", "no-slash", env=base)
        assert "give a Hub dataset id as user/name" in core_one_line_error(bad) and not (tmp_path / "never").exists()
        wrong = core_cli("export", "--db", str(db), "--format", "jsonl", "--out", str(tmp_path / "f.jsonl"), "--push-to-hub", "a/b", env=base)
        assert "--push-to-hub needs --format hf" in core_one_line_error(wrong)
    finally:
        server.shutdown()
