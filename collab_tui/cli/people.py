"""CLI for the people gallery: `collab people add|list|show|remove`."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from .common import HomeOpt, JsonOpt, absolute_paths, call, home_of
from .output import EXIT_PARTIAL, Out

people_app = typer.Typer(
    help="The cluster's people gallery (face embeddings, never photos) for `submit --task identify`.",
    no_args_is_help=True,
)


@people_app.command("add")
def people_add(
    name: Annotated[str, typer.Argument(help="The person's name (shown on identified faces).")],
    photos: Annotated[list[str], typer.Argument(help="Photos, folders or globs on this machine: one face each.")],
    detector: Annotated[str | None, typer.Option(help="dlib_hog (default) or dlib_cnn.")] = None,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Enrol NAME from photos here: faces are found and embedded on this node; only the embeddings go to
    the cluster."""
    out = Out(json_out)
    rep = call(home_of(home), out, lambda c: c.people_add(name, absolute_paths(photos), detector))
    lines = [f"{rep['name']}: {rep['added']} photo(s) enrolled; gallery version {rep.get('version')}"]
    lines += [f"  skipped {p['source']}: {p['error']}" for p in rep.get("problems", [])]
    out.data(rep, "\n".join(lines))
    if rep.get("problems"):
        raise typer.Exit(EXIT_PARTIAL)


@people_app.command("list")
def people_list(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """The people of the gallery this node holds."""
    out = Out(json_out)
    rep = call(home_of(home), out, lambda c: c.people_list())
    rows = [
        {**r, "nodes": ",".join(r["nodes"]), "added": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["added"]))}
        for r in rep["people"]
    ]
    table = out.table(
        rows, [("name", "NAME"), ("embeddings", "EMBEDDINGS"), ("nodes", "ENROLLED ON"), ("added", "ADDED")]
    )
    out.data(rep, f"{table}\n\ngallery version {rep['version']} (term {rep['term']}), {len(rows)} people")


@people_app.command("show")
def people_show(name: str, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """One person: each embedding's node, photo file name and time."""
    out = Out(json_out)
    rep = call(home_of(home), out, lambda c: c.people_show(name))
    rows = [{**e, "added": time.strftime("%Y-%m-%d %H:%M", time.localtime(e["added"]))} for e in rep["embeddings"]]
    table = out.table(rows, [("node_name", "NODE"), ("source", "PHOTO"), ("added", "ADDED")])
    out.data(rep, f"{rep['name']} (gallery version {rep['version']})\n{table}")


@people_app.command("remove")
def people_remove(name: str, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Remove NAME (every embedding) from the gallery."""
    out = Out(json_out)
    rep = call(home_of(home), out, lambda c: c.people_remove(name))
    out.data(rep, f"{name} removed; gallery version {rep.get('version')}")


def register(app: typer.Typer) -> None:
    app.add_typer(people_app, name="people")
