"""`collab init`, `collab invite`, `collab join`: making a cluster and joining one."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import HomeOpt, JsonOpt, call, home_of
from .output import EXIT_ERROR, Out, parse_duration


def init(
    name: Annotated[str, typer.Option(help="This node's name.")] = "",
    cluster: Annotated[str, typer.Option(help="Cluster name.")] = "collab",
    force: Annotated[bool, typer.Option(help="Replace an existing identity.")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a cluster CA and this node's key pair (private keys 0600)."""
    import socket

    from ..net.identity import create_cluster
    from ..net.pki import IdentityError

    out, h = Out(json_out), home_of(home)
    try:
        ident = create_cluster(h, name or socket.gethostname()[:64], cluster_name=cluster, force=force)
    except IdentityError as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    out.data(
        {"node_id": ident.node_id, "short_id": ident.short_id, "cluster": ident.cluster_id, "home": str(h)},
        f"created cluster {cluster!r} in {h}\nnode id  {ident.short_id}  ({ident.node_id})\nCA pin   {ident.pin}",
    )


invite_app = typer.Typer(
    help="Print a join token; `invite list` and `invite revoke TOKEN_ID` manage the unused ones.",
    invoke_without_command=True,
)


@invite_app.callback()
def invite(
    ctx: typer.Context,
    ttl: Annotated[str, typer.Option(help="Token lifetime (e.g. 15m, 1h, 2d).")] = "1h",
    uses: Annotated[int, typer.Option(min=1, help="How many nodes may join with it.")] = 1,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print a join token (pins the cluster CA, carries a secret). Runs on the root (the node that ran
    `collab init`) or an admin (`collab trust admin add`); the token is kept there."""
    if ctx.invoked_subcommand:
        return
    out = Out(json_out)
    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    res = call(home_of(home), out, lambda c: c.invite(ttl=seconds, uses=uses))
    peers = " or ".join(f"--peer {a}" for a in res.get("addrs") or [res["addr"]])
    out.data(
        res,
        f"{res['token']}\n\non another machine of this LAN:  collab join {res['token']}\n"
        f"(it finds this cluster with mDNS; where multicast does not reach, add {peers})",
    )


def join(
    token: Annotated[str, typer.Argument(help="Token printed by `collab invite`.")],
    peer: Annotated[list[str] | None, typer.Option("--peer", help="Inviter host:port (else mDNS).")] = None,
    name: Annotated[str, typer.Option(help="This node's name.")] = "",
    mdns_interface: Annotated[list[str] | None, typer.Option(help="Interfaces for the mDNS search.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per attempt.")] = 5.0,
    search: Annotated[float, typer.Option(help="Seconds to look for members with mDNS.")] = 10.0,
    force: Annotated[
        bool, typer.Option("--force", help="Replace this home's identity (e.g. after its certificate expired).")
    ] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Join a cluster: find a member that can sign (mDNS or --peer), check the CA pin, then send the secret
    and a CSR; receive a certificate. Every address found is tried until one signs."""
    import asyncio
    import socket

    from ..config import ConfigError, parse_hostport, write_config
    from ..net.identity import identity_exists
    from ..net.join import JoinError, join_cluster
    from ..net.tokens import TokenError, parse_token
    from ..node.state import JsonState
    from ..textfmt import short_id

    out, h = Out(json_out), home_of(home)
    if identity_exists(h) and not force:
        out.error(f"{h} already has an identity; use another --home (or --force to replace it)")
        raise typer.Exit(EXIT_ERROR)
    try:
        tok = parse_token(token)
        addrs = [parse_hostport(p) for p in (peer or [])]
    except (TokenError, ConfigError) as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    discovery = None
    if not addrs:
        from functools import partial

        from ..net.discovery import browser

        out.info("looking for the cluster with mDNS ...")
        discovery = partial(browser, tok.pin_hex[:16], interfaces=mdns_interface or None)
    node_name = name or socket.gethostname()[:64]
    try:
        ident, members, entries = asyncio.run(
            join_cluster(h, token, addrs, node_name, timeout, discovery, search, force=force)
        )
    except JoinError as exc:
        out.error(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    JsonState(h / "state" / "members.json").set("members", members)
    if entries:
        from ..net.trust_store import TrustLogStore

        TrustLogStore(h / "state" / "trust_log.json", ident.ca_cert).merge(entries)
    if not (h / "config.toml").exists():
        write_config(h, {"name": node_name})
    out.data(
        {
            "node_id": ident.node_id,
            "short_id": short_id(ident.node_id),
            "cluster": ident.cluster_id,
            "members": members,
        },
        f"joined cluster {ident.cluster_id[:12]} as {short_id(ident.node_id)} ({len(members)} member(s) known)",
    )


@invite_app.command("list")
def invite_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """The tokens this node issued: id, label, expiry, uses left, status (the secrets are not kept)."""
    import time

    out = Out(json_out)
    rows = call(home_of(home), out, lambda c: c.invite_list())
    now = time.time()
    shown = [{**r, "expires": f"{max(0, r['expires_at'] - now) / 60:.0f} min"} for r in rows]
    cols = [("token_id", "TOKEN"), ("status", "STATUS"), ("uses_left", "USES LEFT"), ("expires", "EXPIRES IN")]
    out.data(rows, out.table(shown, cols) if rows else "no tokens on this node")


@invite_app.command("revoke")
def invite_revoke(
    token: Annotated[str, typer.Argument(help="Token id (8 hex, from `invite list`) or the whole token.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a token before it is used: nobody can join with it any more."""
    out = Out(json_out)
    res = call(home_of(home), out, lambda c: c.invite_revoke(token))
    out.data(res, f"token {res['revoked']} revoked")


def register(app: typer.Typer) -> None:
    for fn in (init, join):
        app.command()(fn)
    app.add_typer(invite_app, name="invite")
