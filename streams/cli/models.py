"""``weir models``: registry versions in MinIO next to the routes decided on the control topic.

``list`` shows every version in the registry with its card, and what the
compacted models topic decided about it; ``publish`` and ``rollback`` put a
:class:`~schemas.ModelVersionEvent` on that topic. The routes are folded the way
a worker folds them (``agents.routing.RoutingTable``) but with every endpoint
taken as ready: this is a view of what was decided. Workers still check that
an endpoint answers before they switch, and report it on the alerts topic
(``weir subscribe alerts --type model.route``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import urlsplit

import click
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from agents.canary import CanaryJudge, Contest
from agents.routing import ModelRoutes, Route, Speculation
from connectors.kafka_tools import quiet_producer, require_topics
from connectors.minio_store import ObjectNotFound, ObjectStore
from connectors.registry import CARD, ModelRegistry
from connectors.signing import signed
from schemas import Lineage, ModelVersionEvent, WeirError, new_event
from schemas.model_card import ModelCard
from schemas.settings import Settings
from schemas.topics import Topic, topic_name
from streams.cli.common import _settings, console, one_line_errors
from streams.routes import fold_routes

WATCH_HINT = (
    "workers switch once the endpoint answers ready: `weir subscribe alerts --type model.route`"
)


def _registry(settings: Settings) -> tuple[ObjectStore, ModelRegistry]:
    store = ObjectStore(settings.minio)
    return store, ModelRegistry(store, settings.minio.models_bucket)


def registry_cards(settings: Settings, model: str | None) -> dict[str, list[ModelCard]]:
    """Model name → its cards in the registry, oldest first."""
    store, registry = _registry(settings)
    found: dict[str, list[str]] = defaultdict(list)
    for key in store.list_keys(settings.minio.models_bucket, f"{model}/" if model else ""):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == CARD:
            found[parts[0]].append(parts[1])
    return {
        name: sorted((registry.card(name, v) for v in versions), key=lambda c: c.created_at)
        for name, versions in found.items()
    }


def contests(settings: Settings) -> dict[str, Contest]:
    """Model → the canary contest its performance role checkpointed last (at most
    WEIR_MONITOR__CHECKPOINT_INTERVAL_S old); {} when the checkpoints cannot be read."""
    from connectors.checkpoints import CheckpointStore

    try:
        saved = CheckpointStore(settings).load_all("performance/", timeout_s=10.0)
    except Exception:  # a view: the routes are shown without the contest
        return {}
    found = {}
    for key, state in saved.items():
        _role, model, name = [*key.split("/"), "", ""][:3]
        if name != "canary" or not isinstance(state, dict):
            continue
        judge = CanaryJudge(model, settings.canary)
        judge.restore(state)  # as the performance role restores it
        if judge.contest is not None:
            found[model] = judge.contest
    return found


def _contest_text(contest: Contest) -> str:
    def share(accuracy: float | None) -> str:
        return "-" if accuracy is None else f"{accuracy:.1%}"

    look = f"look {contest.looks}: {contest.standing}"
    if contest.low is not None and contest.high is not None:
        look += f", canary - active in [{contest.low:+.3f}, {contest.high:+.3f}]"
    return (
        f"  {contest.canary_outcomes} outcomes {share(contest.canary_accuracy)} vs active "
        f"{share(contest.active_accuracy)} ({contest.active_outcomes}); {look}"
    )


def _route_notes(routes: ModelRoutes, contest: Contest | None = None) -> dict[str, list[str]]:
    """Version → what the routing table says about it (active, canary, rollback target...),
    with the canary contest's standing when the performance role checkpointed one."""
    notes: dict[str, list[str]] = defaultdict(list)

    def note(label: str, route: Route) -> None:
        notes[route.version].append(f"{label} {route.url} ({route.protocol})")

    if routes.active is not None:
        note("active", routes.active)
    if routes.serving_canary is not None:
        canary = routes.serving_canary
        note(f"canary {routes.canary_weight:.0%}", canary)
        if contest is not None and contest.canary == canary.version:
            notes[canary.version].append(_contest_text(contest))
    if routes.shadow is not None:
        note("shadow", routes.shadow)
    if routes.speculative is not None:
        spec = routes.speculative
        for member in spec.members:
            note(
                f"speculative {spec.name} ({spec.decider}, {spec.deadline_s * 1000:.0f} ms)",
                member,
            )
    for i, route in enumerate(reversed(routes.history)):
        if route.version not in notes:
            note("rollback target" if i == 0 else "earlier", route)
    return notes


@click.group()
def models() -> None:
    """Model versions: the registry in MinIO and the routes on the control topic."""


@models.command("list")
@click.option("--model", default=None, help="only this model")
@click.pass_context
@one_line_errors
def models_list(ctx: click.Context, model: str | None) -> None:
    """Registry versions (created, metrics, run id) beside the routes on the control topic.

    Routes are what was decided on the compacted models topic, folded as a worker
    folds them but with every endpoint taken as ready; workers check readiness
    before they switch.
    """
    settings = _settings(ctx)
    control = topic_name(settings.kafka, Topic.MODELS)
    table_of_routes, ignored = fold_routes(settings)
    cards = registry_cards(settings, model)
    judged = contests(settings) if any(r.canary for r in table_of_routes.models.values()) else {}
    names = sorted(set(cards) | ({model} if model else set(table_of_routes.models)))
    names = [n for n in names if n in cards or n in table_of_routes.models]
    if not names:
        what = f"model {model}" if model else "models"
        console.print(
            f"no {what} in s3://{settings.minio.models_bucket} and no routes on {control}"
        )
        return
    table = Table(
        "model",
        "version",
        "route",
        "created",
        "metrics",
        "run id",
        title=f"s3://{settings.minio.models_bucket} · routes on {control}",
    )
    for name in names:
        notes = _route_notes(table_of_routes.get(name), judged.get(name))
        known = {c.version for c in cards.get(name, [])}
        for card in cards.get(name, []):
            metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(card.metrics.items()))
            table.add_row(
                name,
                card.version,
                Text("\n".join(notes.get(card.version, ["-"]))),
                card.created_at.strftime("%Y-%m-%d %H:%M"),
                metrics or "-",
                card.run_id or "-",
            )
        for version in sorted(set(notes) - known):
            table.add_row(name, version, Text("\n".join(notes[version])), "(not in registry)")
    console.print(table)
    if ignored:
        console.print(
            f"{ignored} messages on {control} were not signed model-version events (ignored)"
        )


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(f"{value!r} is not an http(s) URL", param_hint="--url")
    return value.rstrip("/")


def _publish(settings: Settings, change: ModelVersionEvent, run_id: str | None = None) -> str:
    """Sign and send a control event (with the events it implies: an activate clears the
    canary) and wait for the broker; returns where the change itself was stored."""
    lineage = Lineage(modelname=change.model, modelversion=change.version, runid=run_id)
    producer = quiet_producer(settings.as_control())  # the principal that may write it
    stored = [
        producer.send(
            topic_name(settings.kafka, Topic.MODELS),
            signed(
                settings,
                new_event(routed, source=f"{settings.events.source}/cli", lineage=lineage),
            ),
        )
        for routed in change.implied()
    ]
    where = stored[0]
    return f"{where.topic} partition {where.partition} offset {where.offset}"


@models.command("publish")
@click.argument("model")
@click.argument("version")
@click.option(
    "--url", required=True, help="the endpoint serving this version, e.g. http://host:8081"
)
@click.option("--protocol", type=click.Choice(["v1", "v2"]), default="v2", show_default=True)
@click.option(
    "--action",
    type=click.Choice(["activate", "canary", "shadow"]),
    default="activate",
    show_default=True,
)
@click.option(
    "--weight",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="share of traffic for a canary, in (0, 1]",
)
@click.pass_context
@one_line_errors
def models_publish(
    ctx: click.Context,
    model: str,
    version: str,
    url: str,
    protocol: str,
    action: str,
    weight: float | None,
) -> None:
    """Route MODEL to VERSION served at --url: publish a model-version event.

    The version must be in the registry; its card gives the feature order,
    metrics and run id that go with the event.
    """
    if (action == "canary") != (weight is not None):
        raise click.UsageError("--weight goes with --action canary, and a canary needs one")
    url = _url(url)
    settings = _settings(ctx)
    require_topics(settings, topic_name(settings.kafka, Topic.MODELS))
    _store, registry = _registry(settings)
    card = _registered(settings, registry, model, version)
    try:
        change = ModelVersionEvent.model_validate(
            {
                "action": action,
                "model": model,
                "version": version,
                "url": url,
                "protocol": protocol,
                "weight": weight,
                "storage_uri": registry.uri(model, version),
                "features": card.features,
                "metrics": card.metrics,
                "run_id": card.run_id,
                "alert_id": card.alert_id,
            }
        )
    except ValidationError as err:
        raise click.UsageError(
            f"not a valid model-version event: {err.errors()[0]['msg']}"
        ) from err
    where = _publish(settings, change, card.run_id)
    console.print(
        f"[green]published[/] {action} {model} {version} → {url} ({protocol}) at {where}; "
        f"{WATCH_HINT}",
        soft_wrap=True,
    )


def _registered(settings: Settings, registry: ModelRegistry, model: str, version: str) -> ModelCard:
    """The card of ``version``, or an error that lists the versions there are."""
    try:
        return registry.card(model, version)
    except ObjectNotFound as err:
        versions = ", ".join(registry.versions(model)) or "none"
        raise WeirError(
            f"{model} version {version} is not in the registry "
            f"(s3://{settings.minio.models_bucket}/{model}/ has versions: {versions}); "
            "register it first"
        ) from err


@models.command("speculate")
@click.argument("model")
@click.option(
    "--member",
    "members",
    multiple=True,
    required=True,
    metavar="VERSION=URL",
    help="a version and the endpoint serving it; two or more",
)
@click.option("--protocol", type=click.Choice(["v1", "v2"]), default="v2", show_default=True)
@click.option(
    "--deadline-ms",
    type=click.IntRange(1, 60_000),
    default=100,
    show_default=True,
    help="how long each batch waits for the members' answers",
)
@click.option(
    "--decider",
    type=click.Choice(["first", "confidence", "majority"]),
    default="first",
    show_default=True,
)
@click.option("--name", default=None, help="names the ensemble (default: spec-<versions>)")
@click.pass_context
@one_line_errors
def models_speculate(
    ctx: click.Context,
    model: str,
    members: tuple[str, ...],
    protocol: str,
    deadline_ms: int,
    decider: str,
    name: str | None,
) -> None:
    """Serve MODEL from several versions at once, against a deadline (speculative serving).

    Every batch goes to each --member; what answered within --deadline-ms is
    decided by --decider; records no member answered in time go to the active
    route. Each version must be in the registry (its card gives the features).
    `weir models clear MODEL --slot speculative` ends it.
    """
    if len(members) < 2:
        raise click.UsageError("a speculation needs two or more --member VERSION=URL")
    settings = _settings(ctx)
    require_topics(settings, topic_name(settings.kafka, Topic.MODELS))
    _store, registry = _registry(settings)
    parsed: list[dict[str, Any]] = []
    for member in members:
        version, sep, url = member.partition("=")
        if not sep:
            raise click.BadParameter(f"{member!r} is not VERSION=URL", param_hint="--member")
        card = _registered(settings, registry, model, version)
        parsed.append(
            {"version": version, "url": _url(url), "protocol": protocol, "features": card.features}
        )
    label = name or "spec-" + "-".join(m["version"] for m in parsed)
    try:
        change = ModelVersionEvent.model_validate(
            {
                "action": "speculate",
                "model": model,
                "version": label,
                "members": parsed,
                "deadline_ms": deadline_ms,
                "decider": decider,
            }
        )
    except ValidationError as err:
        raise click.UsageError(
            f"not a valid model-version event: {err.errors()[0]['msg']}"
        ) from err
    where = _publish(settings, change)
    versions = ", ".join(m["version"] for m in parsed)
    console.print(
        f"[green]published[/] speculate {model} {label}: {versions} within {deadline_ms} ms, "
        f"{decider} decides, at {where}; {WATCH_HINT}",
        soft_wrap=True,
    )


@models.command("rollback")
@click.argument("model")
@click.option("--to", "to_version", default=None, help="version to return to (default: previous)")
@click.option(
    "--serve/--no-serve",
    default=True,
    show_default=True,
    help="serve the version again through WEIR_KSERVE__DEPLOYER when its URL no longer answers",
)
@click.pass_context
@one_line_errors
def models_rollback(ctx: click.Context, model: str, to_version: str | None, serve: bool) -> None:
    """Route MODEL back to the previously active version (or --to VERSION).

    The version and its URL come from the routing history on the control topic.
    A version whose server was retired since (the model host keeps only the newest
    WEIR_KSERVE__KEEP_UNROUTED unrouted versions) is served again from the registry,
    through WEIR_KSERVE__DEPLOYER, and the rollback routes to its new URL.
    """
    settings = _settings(ctx)
    control = topic_name(settings.kafka, Topic.MODELS)
    routes = fold_routes(settings)[0].get(model)
    if routes.active is None:
        raise WeirError(f"nothing to roll back to: {model} has no route on {control}")
    active = routes.active.version
    if to_version is None:
        target = routes.history[-1] if routes.history else None
        if target is None:
            raise WeirError(
                f"nothing to roll back to: {model} has no earlier active version on {control} "
                f"(version {active} is active); route it with `weir models publish`"
            )
    elif to_version == active:
        raise WeirError(f"{model} version {to_version} is already active")
    else:
        target = next((r for r in reversed(routes.history) if r.version == to_version), None)
        if target is None:
            earlier = ", ".join(dict.fromkeys(r.version for r in routes.history)) or "none"
            raise WeirError(
                f"no URL known for {model} version {to_version}: it is not in the routing "
                f"history on {control} (earlier versions: {earlier}); route it with "
                f"`weir models publish {model} {to_version} --url URL`"
            )
    url = target.url
    if serve and target.protocol != "embedded":
        url = _served_url(settings, model, target)
    change = ModelVersionEvent(
        action="rollback",
        model=model,
        version=target.version,
        url=url,
        protocol=target.protocol,
        features=list(target.features) if target.features else None,
        run_id=target.run_id,
    )
    where = _publish(settings, change, target.run_id)
    console.print(
        f"[green]rollback[/] {model}: {active} → {target.version} ({url}) at {where}; {WATCH_HINT}",
        soft_wrap=True,
    )


def _answers(settings: Settings, model: str, route: Route) -> bool:
    """Whether ``route``'s server says ``model`` is ready (one try, the client's timeout)."""
    from connectors.kserve_client import InferenceClient

    async def ready() -> bool:
        async with InferenceClient(settings.kserve) as client:
            return await client.ready(route.url, model, route.protocol)

    return asyncio.run(ready())


def _served_url(settings: Settings, model: str, route: Route) -> str:
    """The URL ``route``'s version answers at, serving it again from the registry through
    the configured deployer if its server was retired (blocking: a server takes seconds to
    load). The version is in the registry: :func:`fold_routes` keeps no route to one that
    is not.

    The model host is asked (it answers with the server it runs, or serves the version
    again): it knows what it serves, and its servers' URLs may not be reachable from
    where the CLI runs (compose's network, from the host). Local servers are tried at
    their URL first."""
    from streams.servers.deployers import deployer_for

    host = settings.kserve.deployer == "host"
    if not host:
        if _answers(settings, model, route):
            return route.url
        console.print(
            f"{model} version {route.version} does not answer at {route.url}; serving it "
            f"again ({settings.kserve.deployer} deployer)",
            soft_wrap=True,
        )
    url = deployer_for(settings).deploy(model, route.version)
    if host and url != route.url:
        console.print(
            f"{model} version {route.version} is no longer served at {route.url}; the "
            f"model host serves it again at {url}",
            soft_wrap=True,
        )
    return url


@models.command("clear")
@click.argument("model")
@click.option(
    "--slot",
    type=click.Choice(["canary", "shadow", "speculative"]),
    required=True,
    help="the route to remove",
)
@click.pass_context
@one_line_errors
def models_clear(ctx: click.Context, model: str, slot: str) -> None:
    """Remove MODEL's canary, shadow or speculative route: publish a clear-<slot> event.

    The event has the slot's own key on the compacted control topic, so a worker
    that starts later holds no stale canary or shadow either.
    """
    settings = _settings(ctx)
    control = topic_name(settings.kafka, Topic.MODELS)
    routes = fold_routes(settings)[0].get(model)
    held = {"canary": routes.canary, "shadow": routes.shadow, "speculative": routes.speculative}[
        slot
    ]
    if held is None:
        raise WeirError(f"{model} has no {slot} route on {control}; nothing to clear")
    version = held.name if isinstance(held, Speculation) else held.version
    change = ModelVersionEvent.model_validate(
        {"action": f"clear-{slot}", "model": model, "version": version}
    )
    where = _publish(settings, change, None if isinstance(held, Speculation) else held.run_id)
    console.print(
        f"[green]cleared[/] {slot} {model} {version} at {where}; {WATCH_HINT}",
        soft_wrap=True,
    )


@models.command("bootstrap")
@click.argument("model", required=False)
@click.option(
    "--history",
    type=click.IntRange(50, 1_000_000),
    default=2000,
    show_default=True,
    help="seeded rows (the demo's first concept) version 1 is trained on",
)
@click.option("--seed", type=int, default=7, show_default=True, help="seed of those rows")
@click.pass_context
@one_line_errors
def models_bootstrap(ctx: click.Context, model: str | None, history: int, seed: int) -> None:
    """Start MODEL's loop: train version 1 by the pipeline, serve it, activate it.

    MODEL defaults to WEIR_SCORING__MODEL. Safe to run again: a model that
    already has an active route is left alone, and a model with a registered
    version is served and activated without training. Serving goes through
    WEIR_KSERVE__DEPLOYER (the model host in docker-compose).
    """
    from streams.bootstrap import bootstrap_model, seeded_history
    from streams.servers.deployers import deployer_for

    settings = _settings(ctx)
    model = model or settings.scoring.model
    control = topic_name(settings.kafka, Topic.MODELS)
    require_topics(settings, control)
    active = fold_routes(settings)[0].get(model).active
    if active is not None:
        console.print(
            f"{model} already routes to version {active.version} at {active.url} on {control}; "
            "nothing to do",
            soft_wrap=True,
        )
        return
    run_id = f"bootstrap-{uuid.uuid4().hex[:12]}"
    change, trained = bootstrap_model(
        settings,
        model,
        seeded_history(history, seed=seed),
        deployer_for(settings),
        run_id=run_id,
        console=console,
    )
    how = f"trained by the pipeline (run {run_id})" if trained else "already registered"
    where = _publish(settings, change, change.run_id)
    console.print(
        f"[green]activated[/] {model} version {change.version} ({how}, {change.metrics}) "
        f"served at {change.url}; published at {where}",
        soft_wrap=True,
    )
