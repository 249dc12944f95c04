"""The TUI's screens: one module per screen (+ its .tcss), all clients of the node through the typed
async control client. Frontend code: it may import Textual, `widgets`, `client`, `api` and the
leaves (textfmt); never the CLI, and the runtime only through the client. Kept free of imports."""
