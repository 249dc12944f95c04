"""Widgets grouped by the screen they serve (nodes, jobs, training, peers, logs). Light: Textual and Rich only."""
