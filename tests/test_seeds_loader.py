"""The seed loader reads the reference pools unchanged and rejects broken files with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import core_cli, core_one_line_error
from datagen.errors import InputError
from datagen.seeds import load_seeds, summarize


def reference_dir() -> Path:
    for parent in Path(__file__).resolve().parents:
        ref = parent / "shared" / "reference"
        if ref.is_dir():
            return ref
    pytest.fail("shared/reference (Alpaca and BELLE seed pools) not found in any parent of the repository; CI provides it")


@pytest.mark.parametrize(
    "name, counts",
    [("seed_tasks.jsonl", (175, 26, 125, "en")), ("zh_seed_tasks.json", (175, 26, 126, "zh"))],
)
def test_reference_pools_load_unchanged(name, counts):
    path = reference_dir() / name
    tasks = load_seeds(path)
    s = summarize(tasks)
    assert (s.tasks, s.classification, s.with_input, s.lang) == counts
    # Nothing is rewritten on the way in: the first record round-trips exactly.
    first = json.loads(path.read_text("utf-8").splitlines()[0])
    assert tasks[0].model_dump() == first


def test_cli_validate_prints_counts():
    ref = reference_dir()
    en = core_cli("seeds", "validate", str(ref / "seed_tasks.jsonl"))
    zh = core_cli("seeds", "validate", str(ref / "zh_seed_tasks.json"))
    assert en.returncode == 0, en.stderr
    assert en.stdout.strip() == "tasks=175 classification=26 with_input=125 lang=en"
    assert zh.returncode == 0, zh.stderr
    assert zh.stdout.strip() == "tasks=175 classification=26 with_input=126 lang=zh"


GOOD = {"id": "t1", "name": "n", "instruction": "Say hi.", "instances": [{"input": "", "output": "Hi"}], "is_classification": False}


def line(**over) -> str:
    rec = {**GOOD, **over}
    return json.dumps({k: v for k, v in rec.items() if v is not ...})


BROKEN = {
    "bad_json_line": line() + "\n{not json\n",
    "missing_key": line(instruction=...) + "\n",
    "wrong_type": line(instances="Hi") + "\n",
    "wrong_type_id": line(id=5) + "\n",
    "empty_instruction": line(instruction="") + "\n",
    "duplicate_id": line() + "\n" + line() + "\n",
    "empty_file": "",
    "only_blank_lines": "\n\n",
    "array_of_non_objects": "[1, 2]",
    "bad_json_array": '[{"id": "t1",',
    "extra_key": line(extra=1) + "\n",
}


@pytest.mark.parametrize("content", BROKEN.values(), ids=BROKEN.keys())
def test_malformed_files_raise_one_line(tmp_path, content):
    p = tmp_path / "seeds.jsonl"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as ei:
        load_seeds(p)
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)


def test_line_number_in_message(tmp_path):
    p = tmp_path / "seeds.jsonl"
    p.write_text(line() + "\n" + line(id="t2") + "\n" + line(id="t3", instances=[]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r":3: instances"):
        load_seeds(p)


def test_json_array_accepted(tmp_path):
    p = tmp_path / "seeds.json"
    p.write_text(json.dumps([GOOD, {**GOOD, "id": "t2", "is_classification": True}]), encoding="utf-8")
    assert summarize(load_seeds(p)).classification == 1


@pytest.mark.parametrize("case", ["bad_json_line", "missing_key", "wrong_type", "duplicate_id", "empty_file", "missing_file"])
def test_cli_validate_malformed(tmp_path, case):
    p = tmp_path / "seeds.jsonl"
    if case != "missing_file":
        p.write_text(BROKEN[case], encoding="utf-8")
    err = core_one_line_error(core_cli("seeds", "validate", str(p)))
    assert str(p) in err


@pytest.mark.parametrize("shape", ["jsonl", "json"])
def test_seed_file_with_utf8_bom_is_accepted(tmp_path, shape):
    # Windows editors (Notepad, Excel's CSV/UTF-8 export) start UTF-8 files with a BOM.
    task = {"id": "t1", "name": "poem", "instruction": "Write a poem about the sea.",
            "instances": [{"input": "", "output": "Waves."}], "is_classification": False}
    body = json.dumps(task) + "\n" if shape == "jsonl" else json.dumps([task])
    path = tmp_path / f"bom.{shape}"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    assert load_seeds(path)[0].instruction == "Write a poem about the sea."
    proc = core_cli("seeds", "validate", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "tasks=1" in proc.stdout


def test_a_leftover_empty_package_seeds_folder_does_not_hide_the_top_level_pools(tmp_path):
    """A checkout updated from the old layout (pools in datagen/seeds/) can keep that folder, empty."""
    import os
    import shutil
    import subprocess
    import sys

    from conftest import REPO

    shutil.copytree(REPO / "datagen", tmp_path / "datagen", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "datagen" / "seeds" / "en").mkdir(parents=True)  # what git leaves behind
    shutil.copytree(REPO / "seeds", tmp_path / "seeds")
    code = "from datagen.seeds import DEFAULT_SEEDS as D; print(D['en'].is_file(), D['en'].parent.parent.parent.name)"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.stdout.split() == ["True", tmp_path.name], r.stderr  # the copy's top-level seeds/
