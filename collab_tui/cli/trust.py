"""`collab trust list|revoke|priority|log|status|admin`: members, revocation, priorities and admins (the trust log)."""

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
    out.data(
        res,
        out.table(res["members"], cols)
        + f"\n(trust log: {res['denylist_version']} entries; `collab trust log` shows them)",
    )


@trust_app.command("revoke")
def trust_revoke(
    node: Annotated[str, typer.Argument(help="Node id, short id or name.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the signed trust log).")] = "",
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a node (on the root or an admin): signs a trust-log entry that every node learns within seconds
    and cuts the node off; an admin revoked loses its power to sign."""
    out = Out(json_out)
    res = call(home_of(home), out, lambda c: c.revoke(node=node, reason=reason))
    out.data(res, f"revoked {res['revoked'][:12]} (trust log: {res['version']} entries)")


@trust_app.command("priority")
def trust_priority(
    node: Annotated[str, typer.Argument(help="Node id, short id or name.")],
    priority: Annotated[int, typer.Argument(help="Election priority: the highest (priority, node id) is master.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Set a member's election priority (on the root or an admin): signs a trust-log entry. A node's
    priority is never what it says of itself."""
    out = Out(json_out)
    res = call(home_of(home), out, lambda c: c.set_priority(node=node, priority=priority))
    out.data(res, f"priority of {res['node_id'][:12]} is {res['priority']} (trust log: {res['version']} entries)")


def _when(ts) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _left(seconds) -> str:
    if seconds is None:
        return ""
    if seconds <= 0:
        return "EXPIRED"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


@trust_app.command("log")
def trust_log(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """The trust log: joins (with inviter and token), renewals, admin changes, revocations, priorities, in
    the same order on every node."""
    from ..textfmt import short_id, trust_detail

    out = Out(json_out)
    rows = call(home_of(home), out, lambda c: c.trust_log())
    shown = []
    for r in rows:
        by = r["by"] if r["by"] == "root" else short_id(r["by"])
        row = {"at": _when(r["at"]), "kind": r["kind"], "by": by, "node": short_id(r["node"])}
        shown.append({**row, "detail": trust_detail(r)})
    cols = [("at", "AT"), ("kind", "EVENT"), ("by", "BY"), ("node", "NODE"), ("detail", "DETAIL")]
    out.data(rows, out.table(shown, cols) if rows else "the trust log is empty")


@trust_app.command("status")
def trust_status(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Per member: admin, who issued its certificate and when it expires (nodes renew their own while a
    third of the lifetime is left)."""
    out = Out(json_out)
    res = call(home_of(home), out, lambda c: c.trust_status())
    shown = [
        {
            **m,
            "admin": "yes" if m["admin"] else "",
            "revoked": "yes" if m["revoked"] else "",
            "left": _left(m["expires_in"]),
            "until": _when(m["expires"]),
        }
        for m in res["members"]
    ]
    cols = [
        ("short_id", "ID"),
        ("name", "NAME"),
        ("admin", "ADMIN"),
        ("issued_by", "ISSUED BY"),
        ("until", "EXPIRES"),
        ("left", "LEFT"),
        ("revoked", "REVOKED"),
    ]
    here = "root" if res["root_here"] else "admin" if res["can_sign"] else "member (cannot sign)"
    out.data(
        res, out.table(shown, cols) + f"\nthis node: {here}; certificates signed here last {res['cert_days']:g} days"
    )


admin_app = typer.Typer(help="Admins: members that can sign joins, renewals and revocations.", no_args_is_help=True)


@admin_app.command("add")
def admin_add(
    node: Annotated[str, typer.Argument(help="Node id, short id or name (it must be connected).")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make a member an admin (on the root, the node that ran `collab init`): the root signs it a signing
    certificate for its own key, so that it can invite, renew and revoke when the root is away."""
    out = Out(json_out)
    res = call(home_of(home), out, lambda c: c.admin_add(node=node))
    out.data(res, f"{res['node_id'][:12]} is an admin (trust log: {res['version']} entries)")


@admin_app.command("remove")
def admin_remove(
    node: Annotated[str, typer.Argument(help="Node id, short id or name.")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Take an admin's power to sign away (on the root or another admin); the nodes it admitted so far keep
    their certificates, anything it signs from now on is refused."""
    out = Out(json_out)
    res = call(home_of(home), out, lambda c: c.admin_remove(node=node))
    out.data(res, f"{res['node_id'][:12]} is no longer an admin (trust log: {res['version']} entries)")


trust_app.add_typer(admin_app, name="admin")


def register(app: typer.Typer) -> None:
    app.add_typer(trust_app, name="trust")
