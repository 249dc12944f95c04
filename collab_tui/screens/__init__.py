"""collab_tui.screens."""
