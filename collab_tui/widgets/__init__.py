"""Widgets grouped by the screen they serve (nodes, jobs, training, peers, logs). Light: Textual and
Rich, `textfmt` and `ml.strategy_specs`; never the CLI or the runtime. Kept free of imports."""
