"""The node runtime: composes `net` into a running node (peers, membership and election glue, event
bus, heartbeats), serves the local control socket (`control.py`, command classes in `commands.py`),
and runs headless as `collab daemon`. It gives services a narrow context instead of itself. It may
import `net`, `api` and the leaves; never a frontend. It never imports TensorFlow or Textual."""
