"""`collab`, the command line: a Typer app with one module per area (identity, trust, node, jobs,
training), shared options in `common.py`, output helpers in `output.py`. A frontend of the node
runtime: it talks to the local node only through the typed control client (`collab_tui/client.py`)
and never names a command as a string. It may import the client, the API shapes, config, textfmt
and, inside commands, what a command needs (the daemon command builds a node); never the TUI.
Heavy modules (TensorFlow, Textual, OpenCV) are imported inside commands only, so `collab --help`
starts fast. The entry point is `main.main`.
"""
