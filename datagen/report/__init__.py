"""A run's report card, and run against run: figures (figures.py) drawn as one HTML file (render.py).

    write_report(engine, "nightly", out="nightly.html", json_out="figures.json", vs="lastweek")
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["build", "to_html", "to_json", "write_report"]


def __getattr__(name: str):
    # Loaded on first use: the figures need the storage layer (SQLAlchemy), which `datagen --help`
    # and every command that registers `report` would otherwise import at start.
    if name in ("build", "to_json"):
        from datagen.report import figures

        return getattr(figures, name)
    if name == "to_html":
        from datagen.report.render import to_html

        return to_html
    raise AttributeError(name)


def write_report(engine, run: str, *, out: str | Path | None = None, json_out: str | Path | None = None, vs: str | None = None) -> dict:
    """Compute the figures once and write the HTML and/or the JSON, each through a temp file and a rename."""
    from datagen.errors import InputError
    from datagen.export import atomic_write
    from datagen.report.figures import build, to_json
    from datagen.report.render import to_html

    for path in (out, json_out):  # checked before any work, as atomic_write would check after it
        if path is not None and not Path(path).parent.is_dir():
            raise InputError(f"output directory does not exist: {Path(path).parent}")
        if path is not None and Path(path).is_dir():
            raise InputError(f"{path} is a directory: give a file name")
    report = build(engine, run, vs)
    if json_out is not None:
        text = to_json(report)
        atomic_write(Path(json_out), lambda f: f.write(text))
    if out is not None:
        page = to_html(report)
        atomic_write(Path(out), lambda f: f.write(page))
    return report
