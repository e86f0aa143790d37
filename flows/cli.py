"""`reviewgru`: the command line. Exit codes: 0 ok, 2 bad usage or bad input (one line), 1 else."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from tasks.config import PRESETS, PipelineConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no phoning home
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tasks")  # stage logs in the run's log
# The embedded Prefect server gets 20 s to start by default; a 2-core machine that is also
# importing TensorFlow in another run took longer (a CI failure), so allow two minutes.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


class _App(typer.Typer):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from flows.failures import reported

        with reported():
            return super().__call__(*args, **kwargs)


# The other commands' defaults, from the same config as a run's.
DEFAULTS = PipelineConfig()
MODEL_NAME_HELP = "Registered model name."
MODEL_URI_HELP = f"Model URI, e.g. models:/reviewgru/3 (default @{DEFAULTS.serve.model_alias})."

app = _App(
    help="Retrain, register and use a GRU next-word model of product reviews.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _fail(message: str) -> None:
    typer.echo(f"reviewgru: error: {message}", err=True)
    raise typer.Exit(2)


@contextlib.contextmanager
def _bad_input_exits_2() -> Iterator[None]:
    """Within, Prefect's terminal log shows no tracebacks; an error escaping the command becomes
    one line, last, exit 2 for bad input or config (`flows/failures.py`, around the whole app)."""
    from flows.failures import quiet_console_tracebacks

    quiet_console_tracebacks()
    yield


# The run flags that set one config key each: flag → dotted key. Type, default and help come from
# the PipelineConfig field (its description), so a flag cannot drift from the config it sets.
RUN_FLAGS: tuple[tuple[str, str], ...] = (
    ("--data", "ingest.data"),
    ("--text-column", "ingest.text_columns"),
    ("--rating-column", "ingest.rating_column"),
    ("--format", "ingest.format"),
    ("--quoting", "ingest.quoting"),
    ("--vocab-size", "tokenizer.vocab_size"),
    ("--min-count", "tokenizer.min_count"),
    ("--embedding-dim", "model.embedding_dim"),
    ("--units", "model.units"),
    ("--max-len", "train.max_len"),
    ("--epochs", "train.epochs"),
    ("--batch-size", "train.batch_size"),
    ("--learning-rate", "train.learning_rate"),
    ("--seed", "train.seed"),
    ("--loss", "train.loss"),
    ("--strategy", "train.strategy"),
    ("--init", "train.init"),
    ("--warm-learning-rate", "train.warm_learning_rate"),
    ("--warm-epochs", "train.warm_epochs"),
    ("--model-name", "registry.model_name"),
    ("--min-improvement", "registry.min_improvement"),
    ("--must-beat", "registry.must_beat"),
    ("--task-runner", "runner.task_runner"),
    ("--dask-address", "runner.dask_address"),
    ("--workdir", "workdir"),
    ("--until", "until"),
)


def _config_field(key: str) -> tuple[Any, Any]:
    """The annotation and FieldInfo of a dotted PipelineConfig key."""

    model: Any = PipelineConfig
    *sections, leaf = key.split(".")
    for section in sections:
        model = model.model_fields[section].annotation
    field = model.model_fields[leaf]
    return field.annotation, field


def _flag_option(flag: str, key: str) -> inspect.Parameter:
    """A typer option for a run flag: None unless given, so the config below it decides."""
    annotation, field = _config_field(key)
    kind = annotation
    if isinstance(annotation, types.UnionType):  # X | None: the option's type is X
        kind = next(a for a in typing.get_args(annotation) if a is not type(None))
    choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else ()
    if choices or kind is Path:
        kind = str if choices else Path
    elif typing.get_origin(kind) is list:
        kind = list[str]
    default = field.default
    shown = ", ".join(default) if isinstance(default, list) else default
    help_text = (field.description or key).rstrip(".")
    if choices:
        help_text += f" ({'|'.join(map(str, choices))})"
    help_text += f". Default: {shown}." if shown not in (None, "") else "."
    option = typer.Option(flag, help=help_text, show_default=False)
    return inspect.Parameter(
        key.replace(".", "__"),
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, option],
    )


def run(
    placeholders: Annotated[
        bool,
        typer.Option("--placeholders", help="Replace URLs with [URL] and numbers with [NUM]."),
    ] = False,
    force_promote: Annotated[
        bool,
        typer.Option("--force-promote", help="Make this model champion, whatever the gate."),
    ] = False,
    no_promote: Annotated[
        bool, typer.Option("--no-promote", help="Register without touching the champion alias.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option(help="TOML config; flags override it.", exists=True)
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help=f"Named settings under the TOML and flags ({'|'.join(PRESETS)}); seed: the "
            "tutorial's exact recipe."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object as the last stdout line.")
    ] = False,
    **flags: Any,
) -> None:
    """Run the retrain flow: ingest → tokenize → train → evaluate → register."""
    if force_promote and no_promote:
        _fail("--force-promote and --no-promote exclude each other")
    if preset is not None and preset not in PRESETS:
        _fail(f"unknown --preset {preset!r}; known: {', '.join(PRESETS)}")
    overrides: dict[str, Any] = {key: flags[key.replace(".", "__")] for _, key in RUN_FLAGS}
    overrides["ingest.text_columns"] = overrides["ingest.text_columns"] or None
    overrides |= {
        "tokenizer.url_placeholder": placeholders or None,
        "tokenizer.number_placeholder": placeholders or None,
        "registry.promotion": "force" if force_promote else ("never" if no_promote else None),
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    from tasks.ingest.sources import check_readable

    pipeline_config = PipelineConfig.load(config, overrides, preset)
    if pipeline_config.ingest.data:  # a dead URL fails in seconds, before any server starts
        check_readable(pipeline_config.ingest.data)
    with _bad_input_exits_2():
        from flows.interrupts import start_temporary_server_in_own_session, stop_on_signals
        from tasks.train.distributed import trains_as_worker

        with (
            contextlib.redirect_stdout(sys.stderr),
            _one_run_per_embedded_store(writes_mlflow=not trains_as_worker(pipeline_config.train)),
            stop_on_signals(),
        ):
            start_temporary_server_in_own_session()
            from flows.retrain import retrain

            summary = retrain(pipeline_config)
    if as_json:
        typer.echo(json.dumps(summary.model_dump(exclude={"gate_reason"})))
    else:
        typer.echo(_human_summary(summary.model_dump()))


# typer reads the options from the signature: the fixed ones above, then one per RUN_FLAGS row.
_fixed = [
    p for p in inspect.signature(run, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD
]
run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [*_fixed, *(_flag_option(flag, key) for flag, key in RUN_FLAGS)]
)
app.command()(run)


def _one_run_per_embedded_store(writes_mlflow: bool) -> contextlib.AbstractContextManager[None]:
    """`writes_mlflow` False: a multi-worker process beside its chief, which holds the MLflow
    lock and waits for this process in every training step."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    from flows.store_lock import embedded_store_locks, exclusive
    from tasks.tracking import configure_mlflow

    mlflow_uri = configure_mlflow() if writes_mlflow else ""
    locks = embedded_store_locks(mlflow_uri, PREFECT_API_URL.value(), PREFECT_HOME.value())
    return exclusive(locks)


def _human_summary(summary: dict[str, Any]) -> str:
    lines = []
    if summary["rows"]:
        rows = summary["rows"]
        lines.append(
            f"rows      read {rows['read']}, ok {rows['ok']}, quarantined {rows['quarantined']},"
            f" duplicates {rows['duplicates']}"
        )
    if summary["tokens"]:
        lines.append("tokens    " + ", ".join(f"{k} {v}" for k, v in summary["tokens"].items()))
    if summary.get("init"):
        init = summary["init"]
        lines.append(f"init      {init['init.mode']}: {init['init.reason']}")
    if summary["train_tokens_per_s"]:
        lines.append(f"training  {summary['train_tokens_per_s']:.0f} tokens/s")
    if summary["metrics"]:
        m = summary["metrics"]
        champion = m["champion_perplexity"]
        lines.append(
            f"test      perplexity {m['test_perplexity']:.2f}"
            f" (unigram {m['unigram_perplexity']:.2f}, bigram {m['bigram_perplexity']:.2f}"
            f", GRU/bigram {m['test_perplexity'] / m['bigram_perplexity']:.2f}"
            + (f", champion {champion:.2f}" if champion is not None else "")
            + f"), top-1 {m['test_top1']:.3f}, top-5 {m['test_top5']:.3f}"
        )
    if summary.get("baseline_warning"):
        lines.append(f"warning   {summary['baseline_warning']}")
    if summary["mlflow_run_id"]:
        lines.append(f"mlflow    run {summary['mlflow_run_id']}")
    if summary["model_version"]:
        verdict = "champion" if summary["promoted"] else "not champion"
        if summary["cached"]:
            verdict = f"cached, {verdict}"
        lines.append(
            f"model     {summary['model_name']} v{summary['model_version']} ({verdict}:"
            f" {summary['gate_reason']})"
        )
    lines.append(f"time      {summary['timings_s']['total']:.1f} s")
    return "\n".join(lines)


def _model_uri(model: str | None, model_name: str) -> str:
    from tasks import tracking
    from tasks.serve.predict import default_model_uri

    tracking.configure_mlflow()
    return model or default_model_uri(model_name, DEFAULTS.serve.model_alias)


@app.command()
def predict(
    text: Annotated[str, typer.Argument(help="The beginning of a review.")],
    model: Annotated[
        str | None,
        typer.Option(help=MODEL_URI_HELP),
    ] = None,
    model_name: Annotated[str, typer.Option(help=MODEL_NAME_HELP)] = DEFAULTS.registry.model_name,
    top_k: Annotated[int, typer.Option(min=1, help="How many candidates.")] = DEFAULTS.serve.top_k,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The most probable next words after TEXT, most probable first."""
    from tasks.serve.predict import load_model, next_words

    with _bad_input_exits_2(), _model_missing_exits_2():
        candidates = next_words(load_model(_model_uri(model, model_name)), text, top_k)
    if as_json:
        typer.echo(json.dumps({"text": text, "next": candidates}))
    else:
        for candidate in candidates:
            typer.echo(f"{candidate['p']:.4f}  {candidate['word']}")


@app.command()
def generate(
    text: Annotated[str, typer.Argument(help="The beginning of a review.")],
    words: Annotated[int, typer.Option(min=1, help="Words to add.")] = 20,
    temperature: Annotated[float, typer.Option(min=0.01, help="Sampling temperature.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")] = None,
    model: Annotated[str | None, typer.Option(help=MODEL_URI_HELP)] = None,
    model_name: Annotated[str, typer.Option(help=MODEL_NAME_HELP)] = DEFAULTS.registry.model_name,
) -> None:
    """Continue TEXT with WORDS sampled words."""
    from tasks.serve.predict import generate as generate_text
    from tasks.serve.predict import load_model

    with _bad_input_exits_2(), _model_missing_exits_2():
        loaded = load_model(_model_uri(model, model_name))
        typer.echo(generate_text(loaded, text, words, temperature, seed))


@contextlib.contextmanager
def _model_missing_exits_2() -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        _fail(
            f"cannot load the model: {error.message.splitlines()[0]} (run `reviewgru run` first?)"
        )
    except ValueError as error:
        _fail(str(error))


@app.command()
def score(
    data: Annotated[str, typer.Argument(help="Review file (CSV/TSV, .gz ok), path or URL.")],
    out: Annotated[Path, typer.Argument(help="Output file: .parquet or .csv.")],
    mode: Annotated[
        str, typer.Option(help="perplexity: per review, highest first; next: next-word top-k.")
    ] = "perplexity",
    model: Annotated[str | None, typer.Option(help=MODEL_URI_HELP)] = None,
    model_name: Annotated[str, typer.Option(help=MODEL_NAME_HELP)] = DEFAULTS.registry.model_name,
    top_k: Annotated[
        int, typer.Option(min=1, help="Candidates per review (mode next).")
    ] = DEFAULTS.serve.top_k,
    text_column: Annotated[
        list[str] | None, typer.Option(help="Text column; repeat to join several.")
    ] = None,
    rating_column: Annotated[
        str, typer.Option(help="Rating column to validate, or 'none' (default: none).")
    ] = "none",
    workdir: Annotated[Path | None, typer.Option(help="Where the validated snapshot goes.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Score a review file with a registered model: per-review perplexity or next words."""
    if mode not in ("perplexity", "next"):
        _fail(f"--mode must be perplexity or next, not {mode!r}")
    overrides: dict[str, Any] = {
        "ingest.rating_column": rating_column,
        "ingest.text_columns": text_column or None,
        "workdir": workdir,
    }
    with _bad_input_exits_2(), _model_missing_exits_2():
        config = PipelineConfig.load(None, {k: v for k, v in overrides.items() if v is not None})
        uri = _model_uri(model, model_name)
        with contextlib.redirect_stdout(sys.stderr):
            from flows.score import score as score_flow
            from tasks.serve.batch import Mode

            summary = score_flow(data, out, uri, cast(Mode, mode), top_k, config)
    if as_json:
        typer.echo(summary.model_dump_json())
    else:
        typer.echo(f"{summary.rows_written} rows → {summary.out} ({summary.mode}, {uri})")


@app.command()
def deploy(
    cron: Annotated[str, typer.Option(help="When to retrain, cron syntax.")] = "0 3 * * *",
    timezone: Annotated[str, typer.Option(help="IANA time zone of the cron.")] = "UTC",
    name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly",
    data: Annotated[str | None, typer.Option(help="Review file or URL to retrain on.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config; --data overrides it.", exists=True)
    ] = None,
    notify: Annotated[
        str | None,
        typer.Option(
            help="Notification block (<type>/<name>, e.g. slack-webhook/ml-alerts) to send "
            "promotions, rejections and failed retrains to, through a Prefect automation."
        ),
    ] = None,
) -> None:
    """Serve the retrain flow on a schedule (one run at a time) until stopped."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        _fail(
            "deploy needs a Prefect server: run `prefect server start`, then "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    with _bad_input_exits_2():
        overrides = {"ingest.data": data} if data else {}
        pipeline_config = PipelineConfig.load(config, overrides)
        from flows.deploy import cron_schedule, serve_retrain

        try:
            schedule = cron_schedule(cron, timezone)
        except ValueError as error:
            _fail(f"--cron {cron!r} / --timezone {timezone!r}: {error}")
        if notify is not None:
            from flows.events import notify_automation

            try:
                notify_automation(pipeline_config.registry.model_name, notify)
            except ValueError as error:
                _fail(str(error))
        serve_retrain(pipeline_config, schedule, name)


@app.command()
def compare(
    model_name: Annotated[str, typer.Option(help=MODEL_NAME_HELP)] = DEFAULTS.registry.model_name,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Also write a PNG of test perplexity by version here.")
    ] = None,
) -> None:
    """The registered versions side by side: aliases, metrics, baselines, data, gate decision."""
    from tasks import run_liveness, tracking
    from tasks.registry.versions import compare_versions, perplexity_chart

    tracking.configure_mlflow()
    run_liveness.fail_dead_runs(model_name)  # no run of a killed process shows as running
    with _model_missing_exits_2():
        rows = compare_versions(model_name)
    if plot is not None:
        perplexity_chart(rows, plot, model_name)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    typer.echo(_versions_table(rows))


def _versions_table(rows: list[dict[str, Any]]) -> str:
    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    header = (
        "version",
        "aliases",
        "ppl",
        "top1",
        "top5",
        "unigram",
        "bigram",
        "champ@split",
        "data",
        "created",
        "gate",
        "init",
    )
    table = [header]
    for row in rows:
        table.append(
            (
                row["version"],
                ",".join(row["aliases"]) or "-",
                number(row["test_perplexity"], 2),
                number(row["test_top1"], 3),
                number(row["test_top5"], 3),
                number(row["unigram_perplexity"], 2),
                number(row["bigram_perplexity"], 2),
                number(row["champion_perplexity"], 2),
                (row["data_digest"] or "-")[:10],
                row["created"],
                row["gate_decision"] or "-",
                row["init"],
            )
        )
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


@app.command()
def history(
    model_name: Annotated[str, typer.Option(help=MODEL_NAME_HELP)] = DEFAULTS.registry.model_name,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every move of the champion and challenger aliases: when, from which version, and why."""
    from mlflow.tracking import MlflowClient

    from tasks import tracking
    from tasks.registry.history import history_rows, read_history
    from tasks.registry.lineage import version_inits

    tracking.configure_mlflow()
    with _model_missing_exits_2():
        rows = history_rows(read_history(MlflowClient(), model_name))
        inits = version_inits(model_name)  # how the version moved to was trained
    rows = [{**row, "init": inits.get(row["to"].removeprefix("v"), "-")} for row in rows]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    header = ("at", "alias", "from", "to", "kind", "init", "reason")
    table = [header, *[tuple(row[key] for key in header) for row in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    for line in table:
        cells = [c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)]
        typer.echo("  ".join([*cells, line[-1]]))


@app.command()
def rollback(
    to: Annotated[
        str | None, typer.Option(help="Version to make champion (default: the previous champion).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why, recorded in the history.")] = None,
    model_name: Annotated[str, typer.Option(help=MODEL_NAME_HELP)] = DEFAULTS.registry.model_name,
) -> None:
    """Move the champion alias back; refuses a version never evaluated on a comparable split."""
    from mlflow.tracking import MlflowClient

    from tasks import tracking
    from tasks.registry.history import rollback as move_champion_back

    tracking.configure_mlflow()
    with _bad_input_exits_2(), _model_missing_exits_2():
        move = move_champion_back(MlflowClient(), model_name, to, reason)
    typer.echo(f"{model_name} champion: v{move.from_version} → v{move.to_version} ({move.reason})")


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Argument(help="CSV file to write.")],
    rows: Annotated[
        int, typer.Option(min=1, help="Number of reviews.")
    ] = DEFAULTS.ingest.demo_rows,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write the synthetic demo reviews in the Amazon review CSV layout."""
    from tasks.ingest.sample_data import write_sample_reviews

    typer.echo(str(write_sample_reviews(out, rows=rows, seed=seed)))


if __name__ == "__main__":
    app()
