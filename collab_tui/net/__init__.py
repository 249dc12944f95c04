"""The network layer: identity and PKI (keys, cluster CA, CSRs, pins), TLS contexts, join tokens and
the join exchange, the signed trust log, the wire codec, the framed connection, the HELLO/ACK, mDNS
discovery, and the sans-IO membership, election, address and refusal cores. It may import only the
standard library, `cryptography`, `zeroconf`/`ifaddr` and `collab_tui` leaves (config, textfmt);
never `node`, a service or a frontend. The cores among its modules import no asyncio or socket."""
