"""collab_tui.screens: one module per screen of the TUI (+ its .tcss). Kept free of imports on purpose."""
