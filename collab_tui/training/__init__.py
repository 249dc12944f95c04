"""Federated training: the sans-IO round logic and run configuration, the run store (replicated),
the master's coordinator, the client side (which trains in the node's ML process), the service and
its control commands. A service: it may import `net` cores, `ml` and `node`'s service-facing modules;
never a frontend. Local images never leave a node: only weights and metrics travel."""
