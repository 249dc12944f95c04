"""collab_tui.node."""
