"""`datagen score`, `datagen select`, `datagen selections`: thin shells over datagen/scores/."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer

from datagen.config import DIVERSITY, SCORE_BATCH_SIZE, SCORE_DIRECTION, SCORE_MAX_TOKENS, SCORE_MODEL
from datagen.errors import InputError

DB = typer.Option(None, "--db", help="SQLAlchemy URL or SQLite path [env: DATAGEN_DATABASE_URL; default: sqlite:///datagen.db]")


def score(
    run: str = typer.Option(..., "--run", help="The run whose kept samples to score."),
    scorer: str = typer.Option("ifd", "--scorer", help="ifd (a local model's instruction-following difficulty)"),
    model: Optional[str] = typer.Option(None, "--model", help=f"A HF causal LM directory or .gguf file [default: {SCORE_MODEL}, the embedded model]"),
    batch_size: int = typer.Option(SCORE_BATCH_SIZE, "--batch-size", help="Sequences per forward pass."),
    max_length: int = typer.Option(SCORE_MAX_TOKENS, "--max-length", help="Tokens per sequence (prompt + output); longer ones are cut."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score at most this many samples in this call."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    db: Optional[str] = DB,
) -> None:
    """Score a run's kept samples; resumable: a re-run scores only what has no score yet."""
    from datagen import storage

    if scorer not in SCORE_DIRECTION or scorer != "ifd":
        raise InputError(f"unknown scorer {scorer!r}: use ifd")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: at least 1")
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit}: at least 1")
    from datagen.scores.ifd import score_run

    def show(res, total):
        if progress and sys.stderr.isatty():
            done = res.scored + res.failed + res.skipped
            print(f"\r{done}/{total} scored, {done / max(res.seconds, 1e-9):.1f}/s", end="", file=sys.stderr, flush=True)

    res = score_run(storage.connect(db, create=False), run, model=model, batch_size=batch_size, max_length=max_length, limit=limit, on_progress=show)
    if progress and sys.stderr.isatty():
        print(file=sys.stderr)
    rate = (res.scored + res.failed) / res.seconds if res.seconds else 0.0
    print(f"run={run} scorer={scorer} model={res.model} scored={res.scored} failed={res.failed} seconds={res.seconds:.1f} per_second={rate:.2f}"
          + (f" device={res.device}" if res.device else ""))


def select(
    run: str = typer.Option(..., "--run", help="The run to select from (its kept samples)."),
    by: str = typer.Option(..., "--by", help="Score keys to rank by, best first by their product: e.g. judge:accuracy,ifd"),
    min_: List[str] = typer.Option([], "--min", help="KEY=VALUE: keep only samples scoring at least VALUE (repeatable)."),
    diversity: float = typer.Option(DIVERSITY, "--diversity", help="Keep a sample only if its cosine similarity to every kept one is <= this (1 = off)."),
    max_: Optional[int] = typer.Option(None, "--max", help="Stop after this many samples."),
    name: str = typer.Option(..., "--name", help="Store the selection under this name (replaces one of the same name)."),
    embed_model: Optional[str] = typer.Option(None, "--embed-model", help=f"HF directory for embeddings [default: {SCORE_MODEL}]"),
    batch_size: int = typer.Option(SCORE_BATCH_SIZE, "--batch-size", help="Texts per forward pass when embedding."),
    db: Optional[str] = DB,
) -> None:
    """Deita's greedy selection: best score first, skip anything too similar to what is kept."""
    from datagen import storage
    from datagen.scores.select import select as do_select

    res = do_select(storage.connect(db, create=False), run, by=by, name=name, mins=min_, diversity=diversity, max_keep=max_,
                    embed_model=embed_model, batch_size=batch_size)
    print(f"selection={res.name} kept={len(res.kept)} candidates={res.candidates} below_min={res.below_min} "
          f"unscored={res.unscored} seconds={res.seconds:.1f}")


def selections(run: Optional[str] = typer.Option(None, "--run", help="Only this run."), db: Optional[str] = DB) -> None:
    """List stored selections with their rule."""
    import json

    from datagen import storage
    from datagen.storage import scores as S

    engine = storage.connect(db, create=False)
    for s in S.list_selections(engine, storage.run_id_of(engine, run)):
        print(f"{s['name']}\t{s['size']}\t{json.dumps(s['rule'], ensure_ascii=False)}")
