"""What `pip install .` (not editable) ships: the default seeds (from the top-level seeds/) and prompts, and no test tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import REPO


def test_non_editable_install_has_the_default_seeds(tmp_path):
    src, target = tmp_path / "src", tmp_path / "site"
    # Build from a copy of the tracked (and new, not ignored) files, so the checkout gets no build/ or egg-info.
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(src)],
                   check=True, capture_output=True, text=True, timeout=300)
    shutil.rmtree(src)  # nothing may come from the source tree now
    code = (
        "import datagen.seeds as s; from datagen.prompts import load_prompts;"
        "print(s.__file__); print(len(s.load_seeds(s.default_seed_path('en'))), len(s.load_seeds(s.default_seed_path('zh'))));"
        "load_prompts('en', None)"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    where, counts = r.stdout.splitlines()
    assert where.startswith(str(target)) and counts == "175 175"
    # The wheel carries exactly the top-level seeds/ pools, byte for byte, as datagen/seeds/.
    shipped = sorted(p.relative_to(target / "datagen" / "seeds").as_posix() for p in (target / "datagen" / "seeds").rglob("*") if p.is_file())
    assert shipped == ["en/seed_tasks.jsonl", "zh/zh_seed_tasks.jsonl"]
    assert all((target / "datagen" / "seeds" / f).read_bytes() == (REPO / "seeds" / f).read_bytes() for f in shipped)
    assert not (target / "datagen" / "devserver.py").exists() and (target / "api" / "cli.py").is_file()
