"""`train qlora --data DIR` on the folders `datagen export` writes: a Hugging Face dataset folder and a
LLaMA-Factory dataset_dir, two steps each on the tiny model; preference folders are refused in one line."""

from __future__ import annotations

import json

import pytest

from datagen.export import Selection, write
from test_export import core_export_db  # noqa: F401  (fixture)
from tests.train_helpers import make_llama
from test_train_cli import train_cli
from train import data as D
from datagen.errors import TrainError


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_llama(tmp_path_factory.mktemp("llama"), chatml=True)


@pytest.mark.parametrize("fmt, layout", [("hf", "alpaca"), ("llama-factory", "sharegpt")])
def test_qlora_trains_two_steps_on_an_export_folder(core_export_db, tmp_path, llama, fmt, layout):  # noqa: F811
    _, engine = core_export_db
    folder = tmp_path / "export"
    assert write(engine, folder, fmt=fmt, layout=layout).rows == 5
    out = tmp_path / "run"
    r = train_cli("qlora", "--data", str(folder), "--model-name-or-path", str(llama), "--output-dir", str(out), "--bits", "16",
                  "--max-steps", "2", "--per-device-batch-size", "2", "--lora-rank", "4")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]


def test_every_folder_kind_reads_as_the_same_dialogs(core_export_db, tmp_path):  # noqa: F811
    _, engine = core_export_db
    want = None
    for fmt in ("hf", "llama-factory"):
        for layout in ("alpaca", "sharegpt"):
            folder = tmp_path / f"{fmt}-{layout}"
            write(engine, folder, fmt=fmt, layout=layout)
            got = [d.turns for d in D.load_dialogs(folder)]
            want = want or got
            assert got == want and len(got) == 5
    assert want[3] == [("把句子翻译成英文。\n\n你好", "Hello")]


def test_preference_folders_and_strangers_are_refused(core_export_db, tmp_path):  # noqa: F811
    _, engine = core_export_db
    from datagen.storage import queries
    from datagen.records import Instance

    queries.edit_sample(engine, 1, actor="t", instances=[Instance(input="", output="Rain drums on the roof.")])
    queries.review_sample(engine, 1, "approve", actor="t")
    for fmt, kind in (("hf", "preference"), ("hf", "kto"), ("llama-factory", "preference"), ("llama-factory", "kto")):
        folder = tmp_path / f"{fmt}-{kind}"
        write(engine, folder, Selection(status="any"), fmt=fmt, kind=kind)
        with pytest.raises(TrainError, match="preference data"):
            D.load_dialogs(folder)
    (tmp_path / "plain").mkdir()
    with pytest.raises(TrainError, match="neither a LLaMA-Factory folder"):
        D.load_dialogs(tmp_path / "plain")
