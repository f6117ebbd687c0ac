"""The ``weir`` command. Settings are built once (``streams.cli.common``) and passed down."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from streams.cli.common import _settings, console, weir_errors
from streams.cli.data import dlq, produce, subscribe
from streams.cli.keys import keys
from streams.cli.knative import event_display
from streams.cli.models import models


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """weir: event-driven streaming MLOps on Kafka, KServe, river and Kubeflow Pipelines."""
    ctx.ensure_object(dict)


# ------------------------------------------------------------------- stack


@cli.group()
def stack() -> None:
    """Run the local stack: Apache Kafka (KRaft) and MinIO on 127.0.0.1."""


@stack.command("up")
@click.pass_context
@weir_errors
def stack_up(ctx: click.Context) -> None:
    """Fetch (first time only), start and wait for Kafka and MinIO; create topics and buckets."""
    from streams.dev.stack import Stack

    settings = _settings(ctx)
    with console.status("bringing the local stack up…"):
        report = Stack(settings, say=console.print).up()
    fetched = [n for n, did in report.fetched.items() if did]
    cache = f"downloaded {', '.join(fetched)}" if fetched else "cached"
    console.print(
        f"[green]stack up[/] in {report.total_s:.1f}s "
        f"(fetch {report.fetch_s:.1f}s, {cache}"
        f", start {report.start_s:.1f}s, ready {report.ready_s:.1f}s); "
        f"{len(report.topics)} topics, {len(report.buckets)} buckets; routes signed by key "
        f"{report.signing_key}{' (made now, `weir keys`)' if report.key_made else ''}"
    )
    if report.minio_reader == "ready":
        console.print(
            f"model servers read MinIO as [bold]{settings.minio.reader_access_key}[/] "
            f"(read-only, bucket {settings.minio.models_bucket})"
        )


@stack.command("fetch")
@click.pass_context
@weir_errors
def stack_fetch(ctx: click.Context) -> None:
    """Download Kafka's jars (Maven) and build MinIO (go install) into the cache, once."""
    import time

    from streams.dev.stack import Stack

    settings = _settings(ctx)
    started = time.monotonic()
    with console.status("fetching Kafka jars and building MinIO (first time: a few minutes)…"):
        fetched = Stack(settings, say=console.print).fetch()
    what = ", ".join(f"{n}: {'fetched' if did else 'cached'}" for n, did in fetched.items())
    console.print(
        f"[green]cache ready[/] in {time.monotonic() - started:.1f}s ({what or 'nothing managed'})"
        f" at {settings.stack.cache_dir}"
    )


@stack.command("down")
@click.pass_context
@weir_errors
def stack_down(ctx: click.Context) -> None:
    """Stop the processes `stack up` started (by their recorded PIDs), and the model
    servers weir started under the same state directory (`weir models bootstrap` or
    `rollback` with the local deployer)."""
    from streams.dev.localrun import stop_model_servers
    from streams.dev.stack import Stack

    settings = _settings(ctx)
    stopped = Stack(settings, say=console.print).down()
    servers = stop_model_servers(settings)
    if servers:
        pids = ", ".join(map(str, servers))
        console.print(f"{len(servers)} model server(s) stopped (pid {pids})")
    if not any(stopped.values()) and not servers:
        console.print("nothing was running")


@stack.command("status")
@click.pass_context
@weir_errors
def stack_status(ctx: click.Context) -> None:
    """Show what runs where; exit 1 if a service is not ready."""
    from streams.dev.stack import Stack

    rows = Stack(_settings(ctx)).status()
    table = Table("service", "address", "managed", "pid", "ready", "log")
    for r in rows:
        table.add_row(
            r.name,
            r.address,
            "yes" if r.managed else "no (external)",
            str(r.pid or "-"),
            "[green]yes[/]" if r.ready else "[red]no[/]",
            r.log or "-",
        )
    console.print(table)
    if not all(r.ready for r in rows):
        sys.exit(1)


# ------------------------------------------------------------------ topics


@cli.group()
def topics() -> None:
    """Kafka topics weir uses."""


@topics.command("create")
@click.pass_context
@weir_errors
def topics_create(ctx: click.Context) -> None:
    """Create every weir topic with its partitions and configs (idempotent)."""
    from connectors.kafka import ensure_topics
    from schemas.topics import topic_specs

    settings = _settings(ctx)
    outcome = ensure_topics(settings)
    table = Table("topic", "partitions", "config", "result")
    for spec in topic_specs(settings.kafka):
        cfg = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        table.add_row(spec.name, str(spec.partitions), cfg, outcome[spec.name])
    console.print(table)


# ----------------------------------------------------------------- schemas


@cli.group()
def schemas() -> None:
    """Event schemas (JSON Schema for non-Python consumers)."""


@schemas.command("export")
def schemas_export() -> None:
    """Regenerate schemas/jsonschema/*.json from the pydantic models."""
    from schemas.jsonschema_export import export

    for path in export():
        console.print(str(path))


# ------------------------------------------------------------------- serve


@cli.command()
@click.argument("model")
@click.option("--version", "version", required=True, help="model version in the registry")
@click.option("--port", type=int, default=8080, show_default=True, help="REST port")
@click.pass_context
@weir_errors
def serve(ctx: click.Context, model: str, version: str, port: int) -> None:
    """Serve MODEL/VERSION from the MinIO registry with kserve.ModelServer (V1 and V2 REST).

    Binds WEIR_KSERVE__BIND_HOST (127.0.0.1 by default); runs until interrupted.
    """
    from streams.servers.model_server import serve as run_server

    run_server(_settings(ctx), model, version, port)


@cli.command("model-host")
@click.option("--port", type=int, default=8070, show_default=True, help="the host's API port")
@click.pass_context
@weir_errors
def model_host(ctx: click.Context, port: int) -> None:
    """Serve registry versions on request, one kserve.ModelServer process each.

    Workers with WEIR_KSERVE__DEPLOYER=host and WEIR_KSERVE__HOST_URL pointing
    here get every retrained version served where all of them can reach it.
    API: POST/GET /v1/deployments, DELETE /v1/deployments/MODEL/VERSION,
    GET /healthz. Binds WEIR_KSERVE__BIND_HOST; model servers take ports
    WEIR_KSERVE__PORT_MIN..PORT_MAX (any free port when 0) and are named by
    WEIR_KSERVE__ADVERTISED_HOST in the URLs handed out.
    """
    from streams.servers.model_host import run_model_host

    run_model_host(_settings(ctx), port=port)


# ------------------------------------------------------------------ worker


ROLE_NAMES = ("scoring", "monitor", "feedback", "performance", "retrainer", "learner")


@cli.command()
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(ROLE_NAMES),
    help="run this role (repeatable); one role runs in this process, none = every role",
)
@click.option("--loglevel", default="info", show_default=True)
@click.option("--worker-id", default=None, help="name in route decisions (WEIR_SCORING__WORKER_ID)")
@click.option(
    "--live-port",
    type=int,
    default=None,
    help="serve /metrics and the status page on this port (WEIR_LIVE__PORT; 0 = off)",
)
@click.option(
    "--nice-after-start",
    type=click.IntRange(0, 19),
    default=0,
    help="one role: once started, run at this niceness (lower CPU priority); weir worker "
    "does so for the monitor (WEIR_SCORING__MONITOR_NICENESS)",
)
@click.option(
    "--scoring-first",
    is_flag=True,
    help="one role (monitor, feedback, learner) sharing this machine's cores with a scoring "
    "role: while that is behind, use at most WEIR_SCORING__INSIGHT_SHARE_BEHIND of a core; "
    "weir worker does so when it runs scoring too",
)
@click.pass_context
@weir_errors
def worker(
    ctx: click.Context,
    roles: tuple[str, ...],
    loglevel: str,
    worker_id: str | None,
    live_port: int | None,
    nice_after_start: int,
    scoring_first: bool,
) -> None:
    """Run weir's roles until interrupted: scoring, monitor, feedback, performance, retrainer,
    learner (the last with WEIR_LEARNER__ENABLED).

    With one --role, that role runs in this process (a Faust worker of its own
    consumer group). Without --role, or with several, each role runs as a
    supervised child process and --live-port serves one view over all of them.
    """
    settings = _settings(ctx)
    if worker_id is not None:
        scoring = settings.scoring.model_copy(update={"worker_id": worker_id})
        settings = settings.model_copy(update={"scoring": scoring})
    if live_port is not None:
        settings = settings.model_copy(
            update={"live": settings.live.model_copy(update={"port": live_port})}
        )
    if len(roles) == 1:
        from streams.app import run_role

        run_role(
            settings,
            roles[0],
            loglevel=loglevel,
            nice_after_start=nice_after_start,
            scoring_first=scoring_first,
        )
        return
    from streams.supervisor import run_supervisor

    run_supervisor(settings, tuple(dict.fromkeys(roles)) or ROLE_NAMES, loglevel=loglevel)


# ----------------------------------------------------------------- knative


@cli.command()
@click.option("--port", type=int, default=None, help="default: WEIR_KNATIVE__INGRESS_PORT")
@click.pass_context
@weir_errors
def ingress(ctx: click.Context, port: int | None) -> None:
    """Serve the CloudEvents HTTP ingress (a Knative sink) that produces to Kafka."""
    from streams.servers.ingress import run_ingress

    run_ingress(_settings(ctx), port=port)


@cli.command()
@click.pass_context
@weir_errors
def egress(ctx: click.Context) -> None:
    """Forward predictions and alerts as CloudEvents to the Knative sink in K_SINK."""
    from streams.servers.egress import run_egress

    run_egress(_settings(ctx))


# -------------------------------------------------------------------- demo


@cli.command()
@click.option(
    "--keep", is_flag=True, help="leave the stack running afterwards, and the run's topics"
)
@click.pass_context
@weir_errors
def demo(ctx: click.Context, keep: bool) -> None:
    """The main job: bring the stack up and show weir working end to end."""
    from streams.dev.demo import run_demo

    run_demo(_settings(ctx), console=console, keep=keep)


for _command in (produce, subscribe, models, dlq, event_display, keys):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="weir")


if __name__ == "__main__":
    main()
