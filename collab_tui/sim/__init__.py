"""A deterministic simulator of a cluster: N virtual nodes, each the real sans-IO `ControlCore`
(membership + election, net/control.py) the daemon runs, with a federated run's commit rules
(training/run_sync.py) and a distributed job's master (jobs/master_side.py), on a virtual clock and a seeded
network that delays, jitters, loses, duplicates and reorders messages, partitions nodes (any split, one
way too), crashes and restarts them (their persisted term kept), slows them and drifts their clocks.
Nothing sleeps; a run is a function of its seed.

- `network.py`: the seeded network (links, faults);
- `cluster.py`: the event loop, the nodes' life cycle and the driver rules of node/runtime.py and
  node/peers.py (hello on connect, heartbeats, a closed connection seen by the other side, redial);
- `runs.py`: a federated run whose rounds go on through the faults (no committed round lost or twice);
- `jobs.py`: a job submitted by one node and run by all (exactly one outcome per item, all of them soon);
- `invariants.py`: the control plane's properties, checked on every step;
- `scenarios.py`: a random fault schedule from a seed, a run, its verdict and minimal trace;
- ``python -m collab_tui.sim --seed S`` replays one scenario and prints its trace.
"""
