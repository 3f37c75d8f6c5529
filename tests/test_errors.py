"""Issue 18.4: every user-facing error class is declared in datagen/errors.py, and nowhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import datagen.errors as errors

REPO = Path(__file__).resolve().parents[1]


def test_error_classes_are_declared_in_one_module():
    names = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, errors.DatagenError)}
    assert {"DatagenError", "InputError", "NotFound", "Conflict", "Unavailable", "StorageError"} <= names
    for name in names - {"DatagenError"}:  # the docstring's tree names every class
        assert f" {name} " in errors.__doc__, name
    elsewhere = []
    for path in [*REPO.glob("datagen/**/*.py"), *REPO.glob("api/**/*.py"), *REPO.glob("train/**/*.py")]:
        if path == Path(errors.__file__).resolve():
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", getattr(b, "attr", None)) in names for b in node.bases):
                elsewhere.append(f"{path.relative_to(REPO)}: {node.name}")
    assert elsewhere == []
