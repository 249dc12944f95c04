"""collab_tui.net."""
