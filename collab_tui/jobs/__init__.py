"""Distributed recognition jobs: the sans-IO scheduler and worker-health cores, the durable job store
(SQLite, WAL) of the submitter, the master/worker/submitter drivers, job types (plugins found through
the `collab.job_types` entry points) and the jobs' control commands. A service: it reaches the cluster
through the context the node gives it, and may import `net` cores, `ml` (for the job types) and
`node`'s service-facing modules (context, state, resources, control decorators); never a frontend
(cli, app, screens, widgets)."""
