"""The node runtime: composes `net` into a running node (peers, membership and election glue, event
bus, heartbeats), gives each service a narrow typed context (`context.py`) instead of itself, and
serves the local control socket (`control.py`, the node's command class in `commands.py`). It may
import `net`, `api` and the leaves; never a service, the composition root (`compose.py`, which runs
it as `collab daemon` through `daemon.py`) or a frontend. It never imports TensorFlow or Textual."""
