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

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help="Self-instruct data: generate, curate, export.")
seeds_app = typer.Typer(no_args_is_help=True, help="Inspect seed task pools.")
app.add_typer(seeds_app, name="seeds")

DB = typer.Option(None, "--db", envvar="DATAGEN_DATABASE_URL", help="SQLAlchemy URL or SQLite path [default: sqlite:///datagen.db]")


def fail(msg: str, code: int = 1) -> None:
    """One line on stderr and a non-zero exit: what a user sees for bad input, never a traceback."""
    print(f"error: {msg}", file=sys.stderr)
    raise typer.Exit(code)


def _user_errors() -> tuple[type[BaseException], ...]:
    from datagen.backends import FatalBackendError
    from datagen.export import ExportError
    from datagen.pipeline import PipelineError
    from datagen.prompts import PromptError
    from datagen.seeds import SeedError
    from datagen.storage import StorageError
    from sqlalchemy.exc import SQLAlchemyError

    return (FatalBackendError, ExportError, PipelineError, PromptError, SeedError, StorageError, SQLAlchemyError, ValueError, OSError)


@app.command()
def generate(
    num_instructions: int = typer.Option(100, "--num-instructions", "-n", help="Accepted instructions to reach."),
    run: Optional[str] = typer.Option(None, "--run", help="Run name; an existing run is resumed."),
    api: Optional[str] = typer.Option(None, "--api", help="chat | completion | local [default: local unless a key or base URL is set]"),
    model: Optional[str] = typer.Option(None, "--model", help="Model name, or for --api local a HF directory / .gguf file."),
    base_url: Optional[str] = typer.Option(None, "--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"),
    lang: str = typer.Option("en", "--lang", help="en | zh"),
    seeds: Optional[Path] = typer.Option(None, "--seeds", help="Seed task file (JSONL) [default: seeds/<lang>/]"),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Prompt template TOML [default: built-in for --lang]"),
    db: Optional[str] = DB,
    concurrency: int = typer.Option(16, "--concurrency", help="Requests in flight (API backends)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per forward pass (--api local)."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run --api local on Ray replicas: auto (local Ray, or RAY_ADDRESS) or a cluster address (host:6379, ray://host:10001)."),
    replicas: int = typer.Option(1, "--replicas", help="Model replicas in the Ray pool."),
    gpus_per_replica: float = typer.Option(0.0, "--gpus-per-replica", help="GPUs each Ray replica reserves."),
    threads_per_replica: int = typer.Option(1, "--threads-per-replica", help="CPU cores (torch threads) each Ray replica reserves."),
    engine: str = typer.Option("auto", "--engine", help="Engine in a Ray replica: auto (vllm if importable and the replica has a GPU) | transformers | vllm."),
    prompts_per_request: int = typer.Option(1, "--prompts-per-request", help="Prompts per Completion API request."),
    rpm: Optional[float] = typer.Option(None, "--rpm", help="Requests per minute limit."),
    tpm: Optional[float] = typer.Option(None, "--tpm", help="Tokens per minute limit (estimated prompt + max answer)."),
    max_tries: int = typer.Option(5, "--max-tries", help="Attempts per request, with exponential backoff."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds per request."),
    context_window: Optional[int] = typer.Option(None, "--context-window", help="Model context size, to fit max_tokens to the prompt."),
    threshold: float = typer.Option(0.7, "--threshold", help="Reject when ROUGE-L to a kept instruction is above this."),
    num_seed_examples: int = typer.Option(6, "--num-seed-examples"),
    num_machine_examples: int = typer.Option(2, "--num-machine-examples"),
    new_per_prompt: int = typer.Option(8, "--new-per-prompt", help="New instructions asked for per prompt."),
    max_instances: int = typer.Option(5, "--max-instances"),
    temperature: float = typer.Option(0.7, "--temperature"),
    top_p: float = typer.Option(0.95, "--top-p"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Answer budget for instruction and instance prompts [default: 1024; 320 for --api local]."),
    price_in: Optional[float] = typer.Option(None, "--price-in", help="USD per 1M input tokens (overrides prices.toml)."),
    price_out: Optional[float] = typer.Option(None, "--price-out", help="USD per 1M output tokens."),
    random_seed: Optional[int] = typer.Option(None, "--seed", help="Random seed for example sampling."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Generate instructions, classify them, write instances, filter, store. Resumable by --run name."""
    from datagen.generate import GenerateOptions, generate as run_generate
    from datagen.pipeline import PipelineConfig
    from datagen import progress as live

    try:
        opts = GenerateOptions(
            run=run, api=api, model=model, base_url=base_url, lang=lang, seeds=seeds, prompts=prompts, db=db,
            concurrency=concurrency, batch_size=batch_size, prompts_per_request=prompts_per_request, rpm=rpm, tpm=tpm,
            max_tries=max_tries, timeout=timeout, context_window=context_window, price_in=price_in, price_out=price_out,
            ray=ray, replicas=replicas, gpus_per_replica=gpus_per_replica, threads_per_replica=threads_per_replica, engine=engine,
            pipeline=PipelineConfig(
                target=num_instructions, threshold=threshold, num_seed_examples=num_seed_examples,
                num_machine_examples=num_machine_examples, new_per_prompt=new_per_prompt, max_instances=max_instances,
                temperature=temperature, top_p=top_p,
                **({"bootstrap_max_tokens": max_tokens, "instances_max_tokens": max_tokens} if max_tokens else {}),
                random_seed=random_seed,
            ),
        )
    except Exception as exc:  # pydantic validation of option values
        fail(str(exc).splitlines()[0])

    async def watch(name, prog, client, task):
        if progress:
            await live.show(name, prog, client, task)

    t0 = time.monotonic()
    try:
        name, prog = asyncio.run(run_generate(opts, on_start=watch))
    except KeyboardInterrupt:
        fail(f"interrupted; resume with --run {run or '<name shown above>'}", 130)
    except _user_errors() as exc:
        fail(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
    secs = time.monotonic() - t0
    rejected = sum(prog.rejected.values())
    print(
        f"run={name} accepted={prog.accepted} rejected={rejected} seconds={secs:.1f} "
        f"per_minute={prog.accepted * 60 / max(secs, 1e-6):.1f}"
    )


@app.command()
def export(
    out: Path = typer.Option(..., "--out", "-o", help="Output file."),
    fmt: str = typer.Option("alpaca", "--format", help="alpaca | jsonl | sharegpt"),
    run: Optional[str] = typer.Option(None, "--run", help="Only this run."),
    status: str = typer.Option("accepted", "--status", help="accepted (accepted + approved) | approved"),
    lang: Optional[str] = typer.Option(None, "--lang", help="en | zh"),
    db: Optional[str] = DB,
) -> None:
    """Write kept samples as training data (one record per instance), atomically."""
    from datagen import storage
    from datagen.export import export as do_export

    try:
        n = do_export(storage.connect(db, create=False), out, fmt=fmt, run=run, status=status, lang=lang)
    except _user_errors() as exc:
        fail(str(exc).splitlines()[0])
    print(f"wrote {n} records to {out}")


@app.command()
def runs(db: Optional[str] = DB) -> None:
    """List runs with counts, acceptance rate, rejection reasons, tokens and cost."""
    from datagen import storage

    try:
        rows = storage.list_runs(storage.connect(db, create=False))
    except _user_errors() as exc:
        fail(str(exc).splitlines()[0])
    t = Table("run", "lang", "api/model", "state", "kept/target", "rejected", "accept %", "top reasons", "requests", "tokens in/out", "cost $")
    for r, st in rows:
        t.add_row(
            r.name, r.lang, f"{r.api}/{r.model}", r.state, f"{st.kept}/{r.target}",
            str(st.by_status.get("rejected", 0)), f"{100 * st.acceptance:.1f}",
            ", ".join(f"{k}={v}" for k, v in st.by_reason.most_common(3)),
            f"{st.requests} ({st.errors} err)", f"{st.tokens_in:,}/{st.tokens_out:,}", f"{st.cost:.4f}",
        )
    Console(width=200).print(t)


@seeds_app.command("validate")
def seeds_validate(path: Path = typer.Argument(..., help="Seed file: JSON Lines or a JSON array.")) -> None:
    """Check a seed file and print its counts."""
    from datagen.seeds import load_seeds, summarize

    try:
        print(summarize(load_seeds(path)).line())
    except _user_errors() as exc:
        fail(str(exc).splitlines()[0])


# --- serve: the review API and dashboard (code in api/) ----------------------------------------


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on; anything but loopback needs DATAGEN_API_TOKEN"),
    port: int = typer.Option(8000, help="TCP port"),
    db: str = typer.Option(None, "--db", help="database URL or SQLite path (default: DATAGEN_DATABASE_URL or datagen.db)"),
) -> None:
    """Serve the review dashboard and REST API over the project database."""
    from api.main import serve as run_server

    run_server(host=host, port=port, db=db)


@app.command()
def dedup(
    input: str = typer.Argument(..., help="Candidates: .txt (a line each), .jsonl or .json (records with --field)."),  # noqa: A002
    lang: str = typer.Option("auto", "--lang", help="en | zh | auto (zh for texts with Han characters)"),
    threshold: float = typer.Option(0.7, "--threshold", help="Reject when ROUGE-L F against anything kept is above this."),
    against: Optional[str] = typer.Option(None, "--against", help="Existing instructions (same formats) to dedup against."),
    field: str = typer.Option("instruction", "--field", help="Record field holding the text (json/jsonl)."),
    out: Optional[str] = typer.Option(None, "--out", help="Kept records [default: INPUT stem + .kept.jsonl]"),
    rejected: Optional[str] = typer.Option(None, "--rejected", help="Write rejected records with nearest text and score (JSONL)."),
) -> None:
    """Drop ROUGE-L near-duplicates, exactly as Alpaca's filter decides, in input order."""
    from datagen.dedup import DedupError, dedup_file

    try:
        stats = dedup_file(input, lang=lang, threshold=threshold, against=against, field=field, out=out, rejected=rejected)
    except (DedupError, OSError, ValueError) as e:
        fail(str(e).splitlines()[0] if str(e) else e.__class__.__name__)
    print(stats.line())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
