"""Command line: a thin shell over the library. Each command parses options and calls one function."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from datagen.config import DRAINED, THRESHOLD, GenerateOptions, PipelineConfig
from datagen.errors import DatagenError, InputError, one_line

G, P = GenerateOptions.model_fields, PipelineConfig.model_fields


class App(typer.Typer):
    """The one place a user-facing error becomes one line on stderr and an exit code; a bug keeps its traceback."""

    def __call__(self, *args, **kwargs):
        from datagen import config

        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if config.env("debug"):
                raise
            bug = exc.__cause__ if isinstance(exc, DatagenError) else exc
            line = one_line(exc) if isinstance(exc, DatagenError) else f"internal error: {type(exc).__name__}: {one_line(exc)}"
            if bug is not None and not isinstance(bug, DatagenError):  # a bug: keep its traceback for the report
                line += f" (traceback in {crash_report(bug)})"
            print(f"error: {line}", file=sys.stderr)
            raise SystemExit(getattr(exc, "exit_code", 1)) from None


def crash_report(exc: BaseException) -> str:
    """Write the traceback beside the cache (temp file, then rename) and return its path."""
    import os
    import tempfile
    import traceback

    from datagen import config

    folder = config.cache_dir() / "crashes"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".crash-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write("".join(traceback.format_exception(exc)))
        path = folder / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        os.replace(tmp, path)
        return str(path)
    except OSError as err:
        return f"<not written: {err}>"


app = App(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="Self-instruct data: generate, curate, export.")
seeds_app = typer.Typer(no_args_is_help=True, help="Inspect seed task pools.")
app.add_typer(seeds_app, name="seeds")

DB = typer.Option(None, "--db", help="SQLAlchemy URL or SQLite path [env: DATAGEN_DATABASE_URL; default: sqlite:///datagen.db]")
FLAGS = {"target": "--num-instructions", "random_seed": "--seed", "bootstrap_max_tokens": "--max-tokens", "instances_max_tokens": "--max-tokens"}


def opt(field, *flags: str, **kw):
    """A typer option whose default and help come from the field's one declaration."""
    return typer.Option(field.default, *flags, help=field.description, **kw)


def validated(schema, **values):
    """Build an options model; a value outside its limits is an InputError naming the flag."""
    from pydantic import ValidationError

    try:
        return schema(**values)
    except ValidationError as exc:
        e = exc.errors()[0]
        name = str(e["loc"][-1]) if e["loc"] else ""
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        raise InputError(f"{flag} {e.get('input')!r}: {e['msg']}") from None


def generate_options(params: dict) -> GenerateOptions:
    """The `generate` command's parsed parameters as options, every value checked (a job's too, at submit)."""
    p = dict(params)
    max_tokens = p.pop("max_tokens", None)
    pipeline = {k: p.pop(k) for k in list(p) if k in P and k != "target"}
    pipeline["target"] = p.pop("num_instructions")
    if max_tokens is not None:
        pipeline.update(bootstrap_max_tokens=max_tokens, instances_max_tokens=max_tokens)
    p.pop("progress", None)
    return validated(GenerateOptions, **p, pipeline=validated(PipelineConfig, **pipeline))




@app.command()
def generate(
    ctx: typer.Context,
    num_instructions: int = opt(P["target"], "--num-instructions", "-n"),
    run: Optional[str] = opt(G["run"], "--run"),
    api: Optional[str] = opt(G["api"], "--api"),
    model: Optional[str] = opt(G["model"], "--model"),
    base_url: Optional[str] = opt(G["base_url"], "--base-url"),
    lang: str = opt(G["lang"], "--lang"),
    seeds: Optional[Path] = opt(G["seeds"], "--seeds"),
    prompts: Optional[Path] = opt(G["prompts"], "--prompts"),
    db: Optional[str] = DB,
    concurrency: int = opt(G["concurrency"], "--concurrency"),
    batch_size: int = opt(G["batch_size"], "--batch-size"),
    ray: Optional[str] = opt(G["ray"], "--ray"),
    replicas: int = opt(G["replicas"], "--replicas"),
    gpus_per_replica: float = opt(G["gpus_per_replica"], "--gpus-per-replica"),
    threads_per_replica: int = opt(G["threads_per_replica"], "--threads-per-replica"),
    engine: str = opt(G["engine"], "--engine"),
    prompts_per_request: int = opt(G["prompts_per_request"], "--prompts-per-request"),
    rpm: Optional[float] = opt(G["rpm"], "--rpm"),
    tpm: Optional[float] = opt(G["tpm"], "--tpm"),
    max_tries: int = opt(G["max_tries"], "--max-tries"),
    timeout: float = opt(G["timeout"], "--timeout"),
    context_window: Optional[int] = opt(G["context_window"], "--context-window"),
    threshold: float = opt(P["threshold"], "--threshold"),
    num_seed_examples: int = opt(P["num_seed_examples"], "--num-seed-examples"),
    num_machine_examples: int = opt(P["num_machine_examples"], "--num-machine-examples"),
    new_per_prompt: int = opt(P["new_per_prompt"], "--new-per-prompt"),
    max_instances: int = opt(P["max_instances"], "--max-instances"),
    temperature: float = opt(P["temperature"], "--temperature"),
    top_p: float = opt(P["top_p"], "--top-p"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Answer budget for instruction and instance prompts [default: 1024; 320 for --api local]."),
    price_in: Optional[float] = opt(G["price_in"], "--price-in"),
    price_out: Optional[float] = opt(G["price_out"], "--price-out"),
    random_seed: Optional[int] = opt(P["random_seed"], "--seed"),
    stall_timeout: float = opt(P["stall_timeout"], "--stall-timeout"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    lease_wait: float = opt(G["lease_wait"], "--lease-wait"),
    mode: Optional[str] = opt(G["mode"], "--mode"),
    wait: bool = opt(G["wait"], "--wait/--no-wait"),
    poll_interval: float = opt(G["poll_interval"], "--poll-interval"),
    max_enqueued_tokens: Optional[int] = opt(G["max_enqueued_tokens"], "--max-enqueued-tokens"),
    batch_max_lines: int = opt(G["batch_max_lines"], "--batch-max-lines"),
    budget: Optional[float] = opt(G["budget"], "--budget"),
    keep_files: bool = opt(G["keep_files"], "--keep-files"),
) -> None:
    """Generate instructions, classify them, write instances, filter, store. Resumable by --run name.

    One process generates a run at a time. SIGTERM drains (in-flight candidates finish) and exits 75.
    --mode batch goes through the Batch API at half price; `generate --run NAME` picks it up later.
    """
    # Every value is checked here, before the database or a model is touched.
    params = dict(locals())
    params.pop("ctx")
    opts = generate_options(params)
    # `generate --run NAME` and nothing else reads as a resume: a NAME that is no run is refused.
    given = {k for k in ctx.params if getattr(ctx.get_parameter_source(k), "name", "") not in ("DEFAULT", "DEFAULT_MAP")}
    resume_only = run is not None and not given - {"run", "db", "progress", "lease_wait", "wait"}
    from datagen.generate import generate as run_generate
    from datagen import progress as live

    async def watch(name, prog, client, task):
        if progress:
            await live.show(name, prog, client, task)

    t0 = time.monotonic()
    try:
        name, prog = asyncio.run(run_generate(opts, on_start=watch, resume_only=resume_only))
    except KeyboardInterrupt:
        print(f"error: interrupted; resume with --run {run or '<name shown above>'}", file=sys.stderr)
        raise typer.Exit(130) from None
    secs = time.monotonic() - t0
    rejected = sum(prog.rejected.values())
    print(
        f"run={name} accepted={prog.accepted} rejected={rejected} seconds={secs:.1f} "
        f"per_minute={prog.accepted * 60 / max(secs, 1e-6):.1f}"
    )
    if prog.note:
        print(prog.note)
    if prog.accepted < prog.target:  # drained by SIGTERM: resumable, not finished
        print(f"stopped at {prog.accepted}/{prog.target}; resume with --run {name}", file=sys.stderr)
        raise typer.Exit(DRAINED)


@app.command()
def export(
    out: Path = typer.Option(..., "--out", "-o", help="Output file (alpaca, jsonl, sharegpt) or folder (llama-factory, hf)."),
    fmt: str = typer.Option("alpaca", "--format", help="alpaca | jsonl | sharegpt | llama-factory | hf"),
    kind: str = typer.Option("sft", "--kind", help="sft (instances) | preference (reviewers' edits as DPO pairs) | kto (approve/reject labels)"),
    layout: Optional[str] = typer.Option(None, "--layout", help="llama-factory, hf: alpaca | sharegpt [default: alpaca]"),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name (LLaMA-Factory's --dataset, the card's title) [default: the folder's name]"),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="hf: then upload the folder as this Hub dataset (user/name); needs a token."),
    run: Optional[str] = typer.Option(None, "--run", help="Only this run."),
    status: Optional[str] = typer.Option(None, "--status", help="accepted (accepted + approved) | approved | discarded | any [default: accepted; kto: any]"),
    lang: Optional[str] = typer.Option(None, "--lang", help="en | zh"),
    chosen: Optional[str] = typer.Option(None, "--selection", help="Only members of this selection (datagen select)."),
    min_score: list[str] = typer.Option([], "--min-score", help="KEY=VALUE: only samples scoring at least VALUE, e.g. judge:accuracy=4.5 (repeatable)."),
    db: Optional[str] = DB,
) -> None:
    """Write kept samples as training data (one record per instance), or reviewers' decisions as preference data, atomically."""
    from datagen import storage
    from datagen.export import DEFAULT_STATUS, Selection, hub, write

    if push_to_hub is not None:
        hub.check_repo_id(push_to_hub)
        if fmt != "hf":
            raise InputError("--push-to-hub needs --format hf")
    sel = Selection(run=run, status=status or DEFAULT_STATUS.get(kind, "accepted"), lang=lang, chosen=chosen, min_scores=tuple(min_score))
    res = write(storage.connect(db, create=False), out, sel, fmt=fmt, kind=kind, layout=layout, name=name)
    print(f"wrote {res.rows} records to {out}")
    if res.train_line:
        print(f"train with: {res.train_line}")
    if push_to_hub is not None:
        print(f"pushed to {hub.push(out, push_to_hub)}")


@app.command()
def runs(db: Optional[str] = DB) -> None:
    """List runs with counts, acceptance rate, rejection reasons, tokens and cost."""
    from datagen import storage

    engine = storage.connect(db, create=False)
    rows = storage.list_runs(engine)
    est = storage.batch_costs(engine, [r.id for r, _ in rows])
    t = Table("run", "lang", "api/model", "state", "kept/target", "rejected", "accept %", "top reasons", "requests", "tokens in/out", "cost $", "batch est $")
    for r, st in rows:
        t.add_row(
            r.name, r.lang, f"{r.api}/{r.model}", r.state, f"{st.kept}/{r.target}",
            str(st.by_status.get("rejected", 0)), f"{100 * st.acceptance:.1f}",
            ", ".join(f"{k}={v}" for k, v in st.by_reason.most_common(3)),
            f"{st.requests} ({st.errors} err" + (f", {st.lost} lost" if st.lost else "") + ")",
            f"{st.tokens_in:,}/{st.tokens_out:,}",
            # a request cut off by kill -9 may have been served and billed: its cost is not known
            f"{st.cost:.4f}" + (f" + unknown ({st.lost} lost)" if st.lost else ""),
            # estimated at submit (answers at max_tokens) and, of that, what is still in flight
            f"{est[r.id][0]:.4f} ({est[r.id][1]:.4f} open)" if r.id in est else "",
        )
    Console(width=200).print(t)


@seeds_app.command("validate")
def seeds_validate(path: Path = typer.Argument(..., help="Seed file: JSON Lines or a JSON array.")) -> None:
    """Check a seed file and print its counts."""
    from datagen.seeds import load_seeds, summarize

    print(summarize(load_seeds(path)).line())


@app.command()
def dedup(
    input: str = typer.Argument(..., help="Candidates: .txt (a line each), .jsonl or .json (records with --field)."),  # noqa: A002
    lang: str = typer.Option("auto", "--lang", help="en | zh | auto (zh for texts with Han characters)"),
    threshold: float = typer.Option(THRESHOLD, "--threshold", help="Reject when ROUGE-L F against anything kept is above this."),
    against: Optional[str] = typer.Option(None, "--against", help="Existing instructions (same formats) to dedup against."),
    field: str = typer.Option("instruction", "--field", help="Record field holding the text (json/jsonl)."),
    out: Optional[str] = typer.Option(None, "--out", help="Kept records [default: INPUT stem + .kept.jsonl]"),
    rejected: Optional[str] = typer.Option(None, "--rejected", help="Write rejected records with nearest text and score (JSONL)."),
) -> None:
    """Drop ROUGE-L near-duplicates, exactly as Alpaca's filter decides, in input order."""
    from datagen.dedup import dedup_file

    print(dedup_file(input, lang=lang, threshold=threshold, against=against, field=field, out=out, rejected=rejected).line())


# Sub-apps live in their own modules (they import DB and the handlers from here, so they come last).
from datagen.dbcli import db_app  # noqa: E402
from datagen.jobs.cli import jobs_app, worker  # noqa: E402
from datagen.jobs.schedule_cli import schedule_app, scheduler_command  # noqa: E402
from datagen.report.cli import report as report_command  # noqa: E402
from datagen.scores import cli as scores_cli  # noqa: E402

from datagen.batch.cli import batches_app  # noqa: E402

app.add_typer(batches_app, name="batches")
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")
app.command("worker")(worker)
app.add_typer(schedule_app, name="schedule")
app.command("scheduler")(scheduler_command)
app.command("report")(report_command)
app.command("score")(scores_cli.score)
app.command("select")(scores_cli.select)
app.command("selections")(scores_cli.selections)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
