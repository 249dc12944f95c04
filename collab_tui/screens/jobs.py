"""Jobs: submit files or folders, watch the progress, read the results, preview annotated images."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DirectoryTree, Footer, Label, ProgressBar

from ..tui_client import CLIENT_ERRORS, describe_error
from ..widgets.batch import Batcher
from ..widgets.jobs import ResultsTable, SubmitForm
from ..widgets.preview import ImagePreview
from ..widgets.topbar import TopBar
from .base import CollabScreen

SHOW_EVERY = 1.0  # seconds between `job_show` calls while a job runs, for a node whose events lack paths
ROWS_EVERY = 0.5  # seconds between results-table updates: a flood of results re-renders the table at most 2/s


class JobsScreen(CollabScreen):
    CSS_PATH = "jobs.tcss"
    TITLE = "Jobs"
    AUTO_FOCUS = "#job-tree"
    BINDINGS = [
        Binding("ctrl+s", "submit", "Submit", id="jobs.submit"),
        Binding("b", "browse", "Browse", id="jobs.browse"),
        Binding("x", "cancel_job", "Cancel job", id="jobs.cancel"),
    ]

    @dataclass
    class JobStarted(Message):
        job: dict

    @dataclass
    class JobShown(Message):
        job: dict

    def __init__(self) -> None:
        super().__init__()
        self.job: dict | None = None
        self.items: dict[str, dict] = {}
        self.previewed: str | None = None
        self._last_show = 0.0
        self._events_carry_paths = False  # job_item events name the item's file: no job_show polling needed
        self._latest_loaded = False
        self._stale = False
        self._hidden_rows: set[str] = set()  # rows that changed while the screen was hidden
        self._counts: tuple | None = None
        self.events = Batcher(self, self._apply_events, every=0.1)  # progress: 10 updates/s at most
        self.rows = Batcher(self, self._sync_rows, every=ROWS_EVERY)  # ids of items whose row changed

    def compose(self) -> ComposeResult:
        yield TopBar()
        yield SubmitForm(id="jobs-form")
        with Horizontal(id="jobs-body"):
            tree = DirectoryTree(self.app.browse_root, id="job-tree")
            tree.border_title = "Browse"
            yield tree
            with Vertical(id="jobs-right"):
                with Horizontal(id="job-progress-row"):
                    yield Label("no job yet", id="job-state")
                    yield ProgressBar(total=1, show_eta=False, id="job-progress")
                yield ResultsTable(id="job-results")
                preview = ImagePreview(
                    "results appear here; pick a row to preview its image", id="job-preview", protocol=self.app.images
                )
                preview.border_title = "Preview"
                yield preview
        yield Footer(compact=True)

    # ----------------------------------------------------------------- loading
    def refresh_data(self) -> None:
        if self._stale:
            self._stale = False
            hidden, self._hidden_rows = self._hidden_rows, set()
            self._sync_rows(list(hidden))
            if self._counts:
                self._progress(*self._counts)
        if self.job is None and not self._latest_loaded:
            self._latest_loaded = True
            self._load_latest()
            self._load_types()

    @work(group="jobs-types", exclusive=True)
    async def _load_types(self) -> None:
        """The task list from the node (`job_types`): a plugin job type shows up. An older node that does
        not know the command keeps the built-in list, silently."""
        try:
            types = await self.client.job_types()
        except CLIENT_ERRORS:
            return
        self.query_one(SubmitForm).set_tasks([t["name"] for t in types])

    @work(group="jobs-load", exclusive=True)
    async def _load_latest(self) -> None:
        jobs = await self.ask("loading jobs", self.client.jobs)
        if jobs:
            await self.ask("loading jobs", lambda: self.client.job_show(job_id=jobs[-1]["job_id"]), self.JobShown)

    @work(group="jobs-show", exclusive=True)
    async def _show_job(self, job_id: str) -> None:
        await self.ask("reading the job", lambda: self.client.job_show(job_id=job_id), self.JobShown)

    # ----------------------------------------------------------------- submitting
    def action_submit(self) -> None:
        self.query_one(SubmitForm).submit()

    def action_browse(self) -> None:
        self.query_one(DirectoryTree).focus()

    def on_submit_form_submitted(self, message: SubmitForm.Submitted) -> None:
        out = self.app.home / "results" / f"tui-{time.strftime('%Y%m%d-%H%M%S')}"
        self.query_one("#job-state", Label).update(f"submitting {Path(message.path).name} ({message.task}) …")
        self._submit(message.path, message.task, str(out))

    @work(group="jobs-submit", exclusive=True)
    async def _submit(self, path: str, task: str, out: str) -> None:
        options = {"method": "mean"} if task == "ensemble" else {}
        client = self.client.using(timeout=120.0)
        await self.ask(
            "submit refused", lambda: client.submit(paths=[path], task=task, options=options, out=out), self.JobStarted
        )

    def on_jobs_screen_job_started(self, message: JobStarted) -> None:
        self._set_job(message.job)
        self.notify(f"job {message.job['job_id']}: {message.job['total']} item(s)")
        self._watch(message.job["job_id"])

    @work(group="jobs-watch", exclusive=True)
    async def _watch(self, job_id: str) -> None:
        try:
            async for event in self.client.job_watch(job_id=job_id):
                self.events.add(event)
                if event.get("kind") == "job_finished":
                    return
        except CLIENT_ERRORS as exc:
            self.post_message(self.Failed("watching the job", describe_error(exc)))

    def action_cancel_job(self) -> None:
        if self.job and self.job.get("status") not in ("done", "cancelled"):
            self._cancel(self.job["job_id"])

    @work(group="jobs-cancel")
    async def _cancel(self, job_id: str) -> None:
        await self.ask("cancel refused", lambda: self.client.job_cancel(job_id=job_id))

    def failed(self, what: str, error: str) -> None:
        if self.job is None:
            self.query_one("#job-state", Label).update(f"{what}: {error}")

    # ----------------------------------------------------------------- showing
    def _set_job(self, job: dict) -> None:
        self.job = job
        self.items = {}
        self._hidden_rows = set()
        self.previewed = None
        self.query_one(ResultsTable).clear()
        self._progress(
            job.get("counts", {}).get("done", job.get("done", 0)),
            job.get("counts", {}).get("error", job.get("error", 0)),
            job.get("total", 0),
            job.get("status", ""),
        )

    def _progress(self, done: int, errors: int, total: int, state: str) -> None:
        self._counts = (done, errors, total, state)
        if not self.is_current:
            self._stale = True
            return
        bar = self.query_one(ProgressBar)
        bar.update(total=max(total, 1), progress=done + errors)
        job_id = self.job["job_id"] if self.job else ""
        self.query_one("#job-state", Label).update(
            f"{job_id[:12]} {self.job.get('task', '') if self.job else ''} {state}: {done}/{total}"
            + (f" · {errors} err" if errors else ""),
            layout=False,
        )

    def node_events(self, events: list[dict]) -> None:
        """A job submitted elsewhere (the CLI) is shown when this screen is not busy with another."""
        for ev in events:
            if ev.get("kind") == "job" and ev.get("state") == "submitted":
                busy = self.job is not None and self.job.get("status") not in ("done", "cancelled")
                if not busy and (self.job is None or ev.get("job_id") != self.job.get("job_id")):
                    self._show_job(ev["job_id"])

    def on_jobs_screen_job_shown(self, message: JobShown) -> None:
        job = message.job
        if self.job is None or self.job.get("job_id") != job.get("job_id"):
            self._set_job(job)
            if job.get("status") not in ("done", "cancelled"):
                self._watch(job["job_id"])
        else:
            self.job.update({k: v for k, v in job.items() if k != "items"})
        for item in job.get("items", []):
            self._upsert(item)
        counts = job.get("counts", {})
        self._progress(counts.get("done", 0), counts.get("error", 0), job.get("total", 0), job.get("status", ""))

    def _apply_events(self, events: list[dict]) -> None:
        if self.job is None:
            return
        job_id, new_items, finished, counts = self.job["job_id"], False, None, None
        for ev in events:
            if ev.get("job_id") != job_id:
                continue
            kind = ev.get("kind")
            if kind == "job":
                self.job["status"] = ev.get("state", self.job.get("status"))
                counts = (ev.get("done", 0), ev.get("errors", 0), ev.get("total", 0), ev.get("state", ""))
            elif kind == "job_item":
                new_items = True
                self._events_carry_paths = self._events_carry_paths or bool(ev.get("path"))
                self._upsert(
                    {
                        "item_id": ev["item_id"],
                        "path": ev.get("path"),
                        "status": "error" if ev.get("error") else "done",
                        "error": ev.get("error"),
                        "result": ev.get("result"),
                        "worker": ev.get("worker"),
                    }
                )
            elif kind == "job_finished":
                finished = ev
        if counts is not None:
            self._progress(*counts)
        if finished is not None:
            self.post_message(self.JobShown(finished))
            summary = finished.get("summary") or {}
            self.notify(f"job {job_id[:12]} {finished.get('status')}: {summary}")
        elif new_items and time.monotonic() - self._last_show >= SHOW_EVERY and not self._events_carry_paths:
            self._last_show = time.monotonic()  # an older node's events lack the item's path: ask for it
            self._show_job(job_id)

    def _upsert(self, item: dict) -> None:
        before = self.items.get(item["item_id"], {})
        merged = {**before, **{k: v for k, v in item.items() if v is not None}}
        if isinstance(merged.get("result"), dict) and isinstance(item.get("result"), dict):
            merged["result"] = {**(before.get("result") or {}), **item["result"]}
        if merged == before:
            return
        self.items[item["item_id"]] = merged
        self.rows.add(item["item_id"])

    def _sync_rows(self, item_ids: list[str]) -> None:
        """Bring the results table up to date (batched: one table re-render for many results)."""
        if not self.is_current:
            self._stale = True  # hidden: these rows are synced when the screen shows again
            self._hidden_rows.update(item_ids)
            return
        table = self.query_one(ResultsTable)
        for item_id in dict.fromkeys(item_ids):
            merged = self.items.get(item_id)
            if merged is None:
                continue  # an item of a previous job
            res = merged.get("result") or {}
            node = res.get("worker_name") or self.live.name_of(merged.get("worker") or res.get("worker") or "")
            table.upsert(merged, node)
            if (
                self.previewed is None
                and (res.get("annotated") or merged.get("path"))
                and merged.get("status") == "done"
            ):
                self._preview(item_id)

    def on_results_table_item_chosen(self, message: ResultsTable.ItemChosen) -> None:
        self._preview(message.item_id)

    def _preview(self, item_id: str) -> None:
        item = self.items.get(item_id) or {}
        path = (item.get("result") or {}).get("annotated") or item.get("path")
        if path and path != self.previewed:
            self.previewed = path
            self.query_one(ImagePreview).show(path)

    @on(DirectoryTree.FileSelected)
    @on(DirectoryTree.DirectorySelected)
    def _picked(self, event: DirectoryTree.FileSelected | DirectoryTree.DirectorySelected) -> None:
        self.query_one(SubmitForm).set_path(event.path)
