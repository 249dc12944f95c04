"""The cluster's people gallery: enrolled people's face embeddings (never their photos), committed by the
master under quorum, fenced by term, replicated to every node, and used by ``submit --task identify``."""
