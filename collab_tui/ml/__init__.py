"""collab_tui.ml."""
