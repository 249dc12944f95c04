"""The root of `collab`: the Typer app, its callback (no subcommand opens the TUI), every area."""

from __future__ import annotations

import typer

from . import doctor, identity, jobs, node, people, service, training, trust
from .common import HomeOpt, state

app = typer.Typer(
    help="collab: turn the machines of a LAN into one collaborative ML cluster.",
    no_args_is_help=False,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context, home: HomeOpt = None) -> None:
    from ..config import resolve_home

    state.home = resolve_home(home)
    if ctx.invoked_subcommand is None:  # no subcommand: the TUI (Textual is imported only here)
        from ..app import run_tui

        raise typer.Exit(run_tui(state.home))


for area in (identity, trust, node, jobs, people, training, service, doctor):  # the order of `collab --help`
    area.register(app)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
