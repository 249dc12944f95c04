"""collab_tui.jobs."""
