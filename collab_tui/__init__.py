"""collab: a terminal-first peer app that turns LAN machines into one ML cluster.

Layers, from the bottom (each may import only those below it; `tests/test_layers.py` checks it):
leaves (`config`, `textfmt`, `fsutil`, `logs`, `api`), `ml` and `net`, `node` (the runtime), the
services `jobs` and `training`, the composition root, and the frontends (`cli/`; `app`, `screens/`,
`widgets/`, `tui_client`; both use `client`). Kept empty of imports on purpose: `collab --help` must
stay fast (no TensorFlow, no Textual).
"""

__version__ = "0.2.0"
PROTOCOL_VERSION = 2  # 2: the trust log replaced the deny-list on the wire (trust_log, trust_get, cert_renew)
