"""``weir keys``: the Ed25519 key pair that signs routes (see connectors/signing.py)."""

from __future__ import annotations

import click
from rich.table import Table

from streams.cli.common import _settings, console, one_line_errors


@click.group("keys", invoke_without_command=True)
@click.pass_context
@one_line_errors
def keys(ctx: click.Context) -> None:
    """Show the key that signs routes and the public keys workers accept."""
    if ctx.invoked_subcommand is None:
        _show(ctx)


def _show(ctx: click.Context) -> None:
    from connectors.signing import PRIVATE_FILE, accepted_keys, keys_dir, load_signer

    settings = _settings(ctx)
    directory = keys_dir(settings)
    signer = load_signer(settings)
    table = Table("key id", "accepted", "signs", title=f"route keys ({directory})")
    for kid in accepted_keys(settings):
        table.add_row(kid, "yes", "yes" if kid == signer.id else "")
    if signer.id not in accepted_keys(settings):
        table.add_row(signer.id, "[red]no[/]", "yes")
    console.print(table)
    source = (
        "WEIR_CONTROL__SIGNING_KEY"
        if settings.control.signing_key is not None
        else str(directory / PRIVATE_FILE)
    )
    console.print(f"routes are signed with {signer.id} from {source}", soft_wrap=True)
    if not settings.control.require_signatures:
        console.print("[yellow]WEIR_CONTROL__REQUIRE_SIGNATURES is off[/]: workers accept anyone")


@keys.command("init")
@click.pass_context
@one_line_errors
def keys_init(ctx: click.Context) -> None:
    """Make the key pair if there is none (`weir stack up` does this too)."""
    from connectors.signing import ensure_keys, keys_dir

    settings = _settings(ctx)
    pair, made = ensure_keys(settings)
    verb = "made" if made else "already there:"
    console.print(f"{verb} key {pair.id} in {keys_dir(settings)}", soft_wrap=True)


@keys.command("rotate")
@click.option(
    "--keep",
    type=click.IntRange(1, 10),
    default=2,
    show_default=True,
    help="public keys still accepted, the new one included",
)
@click.pass_context
@one_line_errors
def keys_rotate(ctx: click.Context, keep: int) -> None:
    """Sign with a new key from now on; the newest --keep public keys stay accepted.

    Workers read the accepted keys when they start: restart them (or give them the
    new public key in WEIR_CONTROL__PUBLIC_KEYS) before routes signed with the new
    key are published.
    """
    from connectors.signing import keys_dir, rotate

    settings = _settings(ctx)
    pair, dropped = rotate(settings, keep=keep)
    console.print(f"now signing with {pair.id} ({keys_dir(settings)})", soft_wrap=True)
    if dropped:
        console.print(f"no longer accepted: {', '.join(dropped)}")
