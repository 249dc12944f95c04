"""`collab trust list|revoke|priority`: members, revocation and election priorities (the signed member records)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import HomeOpt, JsonOpt, call, home_of
from .output import Out

trust_app = typer.Typer(help="Cluster members and revocation.", no_args_is_help=True)


@trust_app.command("list")
def trust_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Known members and revoked nodes."""
    out = Out(json_out)
    res = call(home_of(home), out, lambda c: c.trust_list())
    cols = [("short_id", "ID"), ("name", "NAME"), ("addr", "ADDRESS"), ("priority", "PRIORITY"), ("revoked", "REVOKED")]
    out.data(res, out.table(res["members"], cols) + f"\n(deny-list version {res['denylist_version']})")


@trust_app.command("revoke")
def trust_revoke(
    node: Annotated[str, typer.Argument(help="Node id, short id or name.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the signed deny-list).")] = "",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a node: signs a new deny-list; the master spreads it; the node is cut off within seconds."""
    out = Out(json_out)
    res = call(home_of(home), out, lambda c: c.revoke(node=node, reason=reason))
    out.data(res, f"revoked {res['revoked'][:12]} (deny-list version {res['version']})")


@trust_app.command("priority")
def trust_priority(
    node: Annotated[str, typer.Argument(help="Node id, short id or name.")],
    priority: Annotated[int, typer.Argument(help="Election priority: the highest (priority, node id) is master.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Set a member's election priority (on the node that ran `collab init`): signs new member records,
    which spread like the deny-list. A node's priority is never what it says of itself."""
    out = Out(json_out)
    res = call(home_of(home), out, lambda c: c.set_priority(node=node, priority=priority))
    out.data(res, f"priority of {res['node_id'][:12]} is {res['priority']} (member records version {res['version']})")


def register(app: typer.Typer) -> None:
    app.add_typer(trust_app, name="trust")
