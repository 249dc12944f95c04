"""collab: a terminal-first peer app that turns LAN machines into one ML cluster.

Kept empty of imports on purpose: `collab --help` must stay fast (no TensorFlow, no Textual).
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
