"""Federated training: sans-IO round logic, run store, coordinator (master), client, service."""
