"""Services that plug into a node (jobs, training). Each has start(), stop() and may install control
commands. Imported by the daemon only, so the CLI stays light."""

from __future__ import annotations


def attach_services(node) -> None:
    """Attach every service this installation provides to ``node``."""
    from .jobs.service import JobService

    node.jobs = JobService(node)
    node.services.append(node.jobs)
    from .training.service import TrainingService

    node.training = TrainingService(node)
    node.services.append(node.training)
