"""Command palette (ctrl+p): switch screens, submit a job, make an invite, start training, themes."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

COMMANDS = [
    ("Nodes screen", "the cluster's nodes, live", "nodes", None),
    ("Jobs screen", "submit images, watch results", "jobs", None),
    ("Training screen", "federated runs", "training", None),
    ("Peers & trust screen", "invites, members, revocation", "peers", None),
    ("Logs screen", "the node's log lines", "logs", None),
    ("Submit job", "submit the path in the Jobs form", "jobs", "submit"),
    ("Make invite token", "a join token for a new node", "peers", "invite"),
    ("Start training run", "start a run with the Training form", "training", "start_run"),
    ("Revoke node", "revoke the node chosen in Peers & trust", "peers", "revoke"),
]


class CollabCommands(Provider):
    def _commands(self):
        app = self.app
        for title, help_text, mode, action in COMMANDS:
            yield title, help_text, partial(app.goto, mode, action)
        yield "Toggle light/dark theme", "switch between textual-light and textual-dark", app.action_toggle_theme

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
