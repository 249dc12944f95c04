"""A deterministic simulator of a cluster's control plane: N virtual nodes, each the real sans-IO
`ControlCore` (membership + election, net/control.py) the daemon runs, on a virtual clock and a seeded
network that delays, jitters, loses, duplicates and reorders messages, partitions nodes (any split, one
way too), crashes and restarts them (their persisted term kept), slows them and drifts their clocks.
Nothing sleeps; a run is a function of its seed.

- `network.py`: the seeded network (links, faults);
- `cluster.py`: the event loop, the nodes' life cycle and the driver rules of node/runtime.py and
  node/peers.py (hello on connect, heartbeats, a closed connection seen by the other side, redial);
- `invariants.py`: the properties checked on every step;
- `scenarios.py`: a random fault schedule from a seed, a run, its verdict and minimal trace;
- ``python -m collab_tui.sim --seed S`` replays one scenario and prints its trace.
"""
