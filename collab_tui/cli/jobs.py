"""CLI for distributed jobs: `collab submit`, `collab jobs`, `collab job show|cancel`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..client import ControlError
from .common import HomeOpt, JsonOpt, absolute_paths, call, home_of, node_client, write_page
from .output import EXIT_ERROR, EXIT_PARTIAL, Out

job_app = typer.Typer(help="Inspect or cancel one job.", no_args_is_help=True)


def _progress(done: int, errors: int, total: int) -> None:
    width = 30
    filled = int(width * (done + errors) / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done + errors}/{total} ({errors} errors)")
    sys.stderr.flush()


def submit(
    paths: Annotated[list[str], typer.Argument(help="Files, folders (recursive) or globs.")],
    task: Annotated[
        str, typer.Option(help="faces, people, identify, classify, ensemble, wordcount, ocr, ...")
    ] = "faces",
    model: Annotated[str | None, typer.Option(help="NAME[@VERSION] for classify/ensemble.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write annotated copies and results.jsonl here.")] = None,
    method: Annotated[str, typer.Option(help="Ensemble rule: mean or vote.")] = "mean",
    detector: Annotated[
        str | None, typer.Option(help="Face detector for faces/identify: dlib_hog (default), dlib_cnn, haar.")
    ] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the job id and return.")] = False,
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Submit images (or other files) to the cluster; prints results as they arrive."""
    out_obj, h = Out(json_out), home_of(home)
    abs_paths = absolute_paths(paths)
    options: dict = {"method": method} if task == "ensemble" else {}
    if detector:
        options["detector"] = detector
    job = call(
        h,
        out_obj,
        lambda c: c.submit(
            abs_paths, task=task, model=model, options=options, out=str(out.absolute()) if out else None
        ),
    )
    if no_wait:
        out_obj.data(job, job["job_id"])
        return
    if not json_out:
        out_obj.info(f"job {job['job_id']}: {job['total']} item(s), task {task}")
    final = None
    with node_client(h, out_obj) as client:
        try:
            for ev in client.job_watch(job_id=job["job_id"]):
                if ev["kind"] == "job_item" and json_out:
                    out_obj.data(ev)
                elif ev["kind"] == "job" and not json_out:
                    _progress(ev["done"], ev["errors"], ev["total"])
                elif ev["kind"] == "job_finished":
                    final = ev
                    break
        except KeyboardInterrupt:
            out_obj.info(f"\nstopped watching; the job goes on (collab job show {job['job_id']})")
            raise typer.Exit(130) from None
        except (ControlError, ConnectionError) as exc:  # refused, or the node went away mid-stream
            out_obj.error(f"watching job {job['job_id']} stopped: {exc}; it goes on (collab job show)")
            raise typer.Exit(EXIT_ERROR) from None
    if not json_out:
        sys.stderr.write("\n")
        _print_items(out_obj, final)
    else:
        out_obj.data(
            {
                "kind": "summary",
                "job_id": final["job_id"],
                "status": final["status"],
                "summary": final["summary"],
                "counts": final["counts"],
            }
        )
    if final["counts"].get("error"):
        raise typer.Exit(EXIT_PARTIAL)


def _print_items(out_obj: Out, job: dict) -> None:
    rows = []
    for it in job["items"]:
        res = it.get("result") or {}
        rows.append(
            {
                "item": it["item_id"],
                "file": Path(it["path"]).name,
                "status": it["status"],
                "labels": ",".join(res.get("labels", [])) if isinstance(res.get("labels"), list) else "",
                "found": len(res.get("detections", [])) if "detections" in res else "",
                "node": res.get("worker_name", ""),
                "error": (it.get("error") or "")[:60],
            }
        )
    cols = [
        ("item", "ITEM"),
        ("file", "FILE"),
        ("status", "STATUS"),
        ("labels", "LABELS"),
        ("found", "FOUND"),
        ("node", "NODE"),
        ("error", "ERROR"),
    ]
    out_obj.data(job, out_obj.table(rows, cols) + "\n\n" + job_sentence(job))


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


_IMAGE_TASKS = ("faces", "people", "identify", "classify", "ensemble", "ocr")


def job_sentence(job: dict) -> str:
    """One line for people: "124 images, 49 faces in 33 of them, 0 errors, 4.1 s on 3 nodes". The part
    on results depends on the task; unknown (plugin) tasks say how many items there were."""
    task = str(job.get("task", ""))
    summary = job.get("summary") if isinstance(job.get("summary"), dict) else {}
    counts = job.get("counts") or {}
    total = int(job.get("total") or summary.get("items") or 0)
    noun = (
        ("image", "images") if task in _IMAGE_TASKS else ("file", "files") if task == "wordcount" else ("item", "items")
    )
    parts = [_n(total, *noun)]
    if task in ("faces", "people"):
        found = int(summary.get("detections", 0))
        thing = _n(found, "face") if task == "faces" else _n(found, "person", "people")
        parts.append(f"{thing} in {summary.get('items_with_detections', 0)} of them")
    elif task == "identify":
        names = summary.get("names") or {}
        top = sorted(names.items(), key=lambda kv: (kv[0] == "unknown", -kv[1], kv[0]))
        shown = ", ".join(f"{count} {who}" for who, count in top[:5])
        more = f" and {_n(len(top) - 5, 'other name')}" if len(top) > 5 else ""
        parts.append(_n(int(summary.get("faces", 0)), "face") + (f": {shown}{more}" if top else ""))
    elif task in ("classify", "ensemble"):
        labels = summary.get("labels") or {}
        if labels:
            top = sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{count} {label}" for label, count in top[:5])
            parts.append(f"labelled {shown}" + (f" and {_n(len(top) - 5, 'other label')}" if len(top) > 5 else ""))
        else:
            parts.append("no labels")
    elif task == "wordcount":
        parts.append(_n(int(summary.get("words", 0)), "word") + f" ({summary.get('distinct', 0)} distinct)")
    elif task == "ocr":
        parts.append(
            f"text in {summary.get('items_with_text', 0)} of them "
            f"({_n(int(summary.get('chars', 0)), 'character')}, {_n(int(summary.get('lines', 0)), 'line')})"
        )
    parts.append(_n(int(counts.get("error", 0)), "error"))
    for state in ("cancelled", "pending"):
        if counts.get(state):
            parts.append(f"{counts[state]} {state}")
    items = job.get("items") or []
    ended = [it["finished_at"] for it in items if it.get("finished_at")]
    workers = {
        it.get("worker") or (it.get("result") or {}).get("worker_name") for it in items if it.get("status") == "done"
    }
    workers.discard(None)
    workers.discard("")
    where = f" on {_n(len(workers), 'node')}" if workers else ""
    if ended and job.get("created_at"):
        parts.append(f"{max(0.0, max(ended) - float(job['created_at'])):.1f} s{where}")
    elif where:
        parts.append(where.strip())
    retried = int(job.get("retried_attempts") or summary.get("retried_attempts") or 0)
    if retried:  # tries that failed on some node and ran again elsewhere (a worker is failing: see `nodes`)
        parts.append(f"{_n(retried, 'failed attempt')} retried")
    return ", ".join(parts)


def jobs(home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Jobs submitted from this node."""
    out_obj = Out(json_out)
    rows = call(home_of(home), out_obj, lambda c: c.jobs())
    cols = [
        ("job_id", "JOB"),
        ("task", "TASK"),
        ("status", "STATUS"),
        ("total", "ITEMS"),
        ("done", "DONE"),
        ("error", "ERRORS"),
    ]
    out_obj.data(rows, out_obj.table(rows, cols))


@job_app.command("show")
def job_show(job_id: str, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Every item of one job with its result."""
    out_obj = Out(json_out)
    _print_items(out_obj, call(home_of(home), out_obj, lambda c: c.job_show(job_id=job_id)))


@job_app.command("cancel")
def job_cancel(job_id: str, home: HomeOpt = None, json_out: JsonOpt = False) -> None:
    """Cancel the unfinished items of a job."""
    out_obj = Out(json_out)
    res = call(home_of(home), out_obj, lambda c: c.job_cancel(job_id=job_id))
    out_obj.data(res, f"cancelled {res['cancelled_items']} item(s) of {job_id}")


@job_app.command("report")
def job_report(
    job_id: str,
    html: Annotated[Path, typer.Option("--html", help="Write the page here (one self-contained HTML file).")],
    home: HomeOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One HTML page of a job: annotated thumbnails with names, labels and scores, errors, timings per node."""
    out_obj = Out(json_out)
    job = call(home_of(home), out_obj, lambda c: c.job_show(job_id=job_id))
    from ..reports import job_report_html

    page = job_report_html(job)
    info = {**write_page(out_obj, html, page), "images": page.count("<img ")}
    info["errors"] = int((job.get("counts") or {}).get("error", 0))
    out_obj.data(info, f"wrote {info['path']}: {info['images']} picture(s), {info['errors']} error(s)")


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(jobs)
    app.add_typer(job_app, name="job")
