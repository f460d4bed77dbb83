"""The bundle of a budgeted reproduction (``segnet reproduce all``), and its import into the docs.

``OUT/bundle`` holds at most 8 files, each well under 16 MB, in one folder, so that it
comes back whole from a machine that returns only a few small files:

- ``table.md`` and ``table.json``: paper vs ours (G, C, mIoU, BF), params, epochs, minutes,
  and every planned run that did not finish, named as such;
- ``runs.json``: every run's configuration, test metrics (per class) and learning curve;
- ``curves.png``: validation mIoU against minutes, one line per run;
- ``segnet_basic.pt``: the best SegNet-Basic, slim (what ``--checkpoint`` needs);
- ``benchmark.md`` and ``benchmark.json``: inference latency, throughput and memory.

The bundle is rewritten after every finished run, so a process killed at any moment
leaves a bundle holding every run that finished.
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
import shutil
from pathlib import Path

from ..report.tables import markdown_table
from ..files import atomic_path, write_json
from ..engine.checkpoint import slim_checkpoint
from .paper import format_table

BUNDLE_FILES = ("table.md", "table.json", "runs.json", "curves.png", "segnet_basic.pt", "benchmark.md",
                "benchmark.json")
# issue 18's GPU inference targets for SegNet at 360x480 (the paper's Titan: 422.5 ms, 1,052 MB)
GPU_TARGETS = {"images_per_s_batch_64": 1500.0, "latency_ms": 3.0, "memory_mb": 300.0}


def _read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def bundle_rows(out: Path, plan: dict) -> list[dict]:
    """One row per planned run: its result when it finished, else why it has none."""
    rows = []
    for run in plan["runs"]:
        result = out / "runs" / run["name"] / "result.json"
        if result.exists():
            rows.append(json.loads(result.read_text()))
        else:
            state = "not run: the budget did not reach it" if run["epochs"] == 0 else "did not finish"
            rows.append({"name": run["name"], "model": run["model"], "recipe": run["recipe"], "tier": run["tier"],
                         "paper": list(run["paper"]), "paper_note": run["paper_note"], "unfinished": state,
                         "planned_epochs": run["epochs"], "protocol_epochs": run["protocol_epochs"]})
    return rows


def format_bundle_table(rows: list[dict], plan: dict) -> str:
    """The paper's numbers beside ours for every planned run, with how each was run."""
    done = [row for row in rows if "ours" in row or "failed" in row]
    head = (f"Device: {plan['device']}; budget {plan['budget_seconds'] / 60:.0f} min; started {plan['started']} "
            f"UTC; dataset {plan['dataset']}.")
    lines = [head, "", format_table(done, "all") if done else "No run finished."]
    missing = [row for row in rows if "unfinished" in row]
    if missing:
        lines += ["", "Planned runs without a result:", ""]
        lines += [f"- {row['name']} ({row['recipe']}): {row['unfinished']}" for row in missing]
    notes = sorted({row["paper_note"] for row in rows})
    lines += ["", "Paper columns: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def write_bundle(out_dir: str | os.PathLike) -> Path:
    """(Re)write ``OUT/bundle`` from what is on disk now; returns the bundle folder."""
    from ..report.plots import curves_by_hours

    out = Path(out_dir)
    plan = json.loads((out / "plan.json").read_text())
    bundle = out / "bundle"
    bundle.mkdir(parents=True, exist_ok=True)
    rows = bundle_rows(out, plan)
    write_json(bundle / "table.json", {"device": plan["device"], "budget_seconds": plan["budget_seconds"],
                                       "started": plan["started"], "dataset": plan["dataset"], "rows": rows})
    with atomic_path(bundle / "table.md") as tmp:
        tmp.write_text(format_bundle_table(rows, plan) + "\n")
    runs, curves = {}, {}
    for row in rows:
        folder = out / "runs" / row["name"]
        entry = {"result": row}
        for name, key in (("config.json", "config"), ("test/metrics.json", "test_metrics")):
            if (folder / name).exists():
                entry[key] = json.loads((folder / name).read_text())
        if (folder / "metrics.csv").exists():
            entry["history"] = _read_csv(folder / "metrics.csv")
            curves[row["name"]] = entry["history"]
        runs[row["name"]] = entry
    write_json(bundle / "runs.json", {"plan": plan, "runs": runs})
    if any(any(r.get("val_mean_iou") is not None for r in history) for history in curves.values()):
        curves_by_hours(curves, bundle / "curves.png", title=f"validation mIoU, {plan['device']}")
    basic = [row for row in rows if row.get("model") == "segnet_basic" and "ours" in row]
    if basic:
        best = max(basic, key=lambda row: row["ours"][2])
        slim_checkpoint(out / "runs" / best["name"] / "best.pt", bundle / "segnet_basic.pt", keep=("config",),
                        provenance={"made_by": "segnet reproduce all", "device": plan["device"],
                                    "test": dict(zip(("G", "C", "mIoU", "BF"), best["ours"]))})
    for name in ("benchmark.md", "benchmark.json"):
        if (out / name).exists():
            shutil.copyfile(out / name, bundle / name)
    return bundle


def gpu_targets(benchmark: dict, model: str = "segnet") -> list[dict]:
    """Issue 18's inference targets for SegNet, each with the measured value and whether it is met."""
    row = next((r for r in benchmark["rows"] if r["model"] == model), None)
    if row is None:
        return []
    variants = row["variants"]
    batch64 = max((float(v["throughput_by_batch"].get("64", v["throughput_by_batch"].get(64, 0)))
                   for v in variants.values()), default=0.0)
    latency = min(v["latency_ms"] for v in variants.values())
    memories = [v["peak_memory_mb"] for v in variants.values() if v["peak_memory_mb"] is not None]
    memory = min(memories) if memories else None
    return [
        {"target": f"throughput at batch 64 >= {GPU_TARGETS['images_per_s_batch_64']:.0f} images/s",
         "value": round(batch64, 1), "met": batch64 >= GPU_TARGETS["images_per_s_batch_64"]},
        {"target": f"batch-1 latency < {GPU_TARGETS['latency_ms']:.0f} ms", "value": round(latency, 2),
         "met": latency < GPU_TARGETS["latency_ms"]},
        {"target": f"batch-1 memory < {GPU_TARGETS['memory_mb']:.0f} MB",
         "value": None if memory is None else round(memory, 1),
         "met": memory is not None and memory < GPU_TARGETS["memory_mb"]},
    ]


def _replace_section(path: Path, key: str, heading: str, body: str) -> None:
    """Put ``body`` between this bundle's markers in ``path``, replacing an earlier import of
    the same bundle, under ``heading`` (added at the end when missing)."""
    start, end = f"<!-- bundle {key} -->", f"<!-- /bundle {key} -->"
    text = path.read_text() if path.exists() else ""
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        if heading not in text:
            text = (text.rstrip() + "\n\n" if text.strip() else "") + f"{heading}\n"
        text = text.rstrip() + "\n\n" + block + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n")


# a bundle is untrusted input: regular files only (no links), each under its cap
BUNDLE_CAPS = {"table.md": 1_000_000, "table.json": 4_000_000, "runs.json": 4_000_000, "curves.png": 10_000_000,
               "benchmark.md": 1_000_000, "benchmark.json": 4_000_000}


def _bundle_file(bundle: Path, name: str, required: bool = False) -> bytes | None:
    """The bytes of ``bundle/name`` if it is a regular file under its cap (None when absent
    and not required); ValueError naming the file otherwise."""
    path = bundle / name
    if not os.path.lexists(path):
        if required:
            raise FileNotFoundError(f"{bundle}: no {name}; give the bundle folder that `segnet reproduce all` wrote "
                                    "(OUT/bundle)")
        return None
    if path.is_symlink() or not stat.S_ISREG(path.lstat().st_mode):
        raise ValueError(f"{path}: is a link or not a regular file; a bundle holds plain files only, so it was "
                         "not made by segnet (or was tampered with); nothing was imported")
    if path.lstat().st_size > BUNDLE_CAPS[name]:
        raise ValueError(f"{path}: {path.lstat().st_size / 1e6:.1f} MB, over the {BUNDLE_CAPS[name] / 1e6:g} MB a "
                         "bundle's file may have; nothing was imported")
    data = path.read_bytes()
    if name.endswith((".md", ".json")) and (b"\0" in data or not _utf8(data)):
        raise ValueError(f"{path}: is not UTF-8 text; nothing was imported")
    return data


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _bundle_json(bundle: Path, name: str, required: bool = False):
    data = _bundle_file(bundle, name, required)
    if data is None:
        return None
    try:
        return json.loads(data)
    except json.JSONDecodeError as error:
        raise ValueError(f"{bundle / name}: not valid JSON ({error}); nothing was imported") from None


def import_bundle(bundle_dir: str | os.PathLike, docs_dir: str | os.PathLike = "docs") -> dict:
    """Put a bundle's table and curves into ``docs/results.md`` and its benchmark and the GPU
    targets into ``docs/performance.md``, each labelled with the device; importing the same
    bundle again replaces its sections. Returns what was written. Everything is read and
    checked first (regular files under size caps, valid JSON with the keys used): a bad
    bundle is refused, naming the file and the key, with docs/ untouched."""
    bundle, docs = Path(bundle_dir), Path(docs_dir)
    table = _bundle_json(bundle, "table.json", required=True)
    table_md = (_bundle_file(bundle, "table.md") or b"").decode()
    curves = _bundle_file(bundle, "curves.png")
    benchmark = _bundle_json(bundle, "benchmark.json")
    try:
        device = re.sub(r"\(.*?\)", "", str(table["device"]))  # without "(R)" and the CPU's flag list
        key = re.sub(r"[^a-z0-9]+", "-", f"{device} {table['started']}".lower()).strip("-")
        heading = f"### {table['device']}, {table['started']} UTC, budget {float(table['budget_seconds']) / 60:.0f} min"
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{bundle / 'table.json'}: key {error} is missing or malformed; nothing was imported") from None
    performance = None
    if benchmark is not None:
        try:
            performance = _benchmark_section(table, benchmark)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            raise ValueError(f"{bundle / 'benchmark.json'}: key {error} is missing or malformed; nothing was "
                             "imported") from None
    written = {"key": key, "files": []}
    body = [heading, "", "Imported with `segnet reproduce import` from a `segnet reproduce all` bundle. Rows marked "
            "budget-limited ran fewer epochs than the recipe; they are not the paper's protocol.", "", table_md]
    if curves is not None:
        image = docs / "results" / "bundles" / f"{key}-curves.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(image) as tmp:
            tmp.write_bytes(curves)
        written["files"].append(str(image))
        body += ["", f"![validation mIoU against time]({image.relative_to(docs).as_posix()})"]
    _replace_section(docs / "results.md", key, "## Budgeted reproductions (`segnet reproduce all`)",
                     "\n".join(body))
    written["files"].append(str(docs / "results.md"))
    if performance is not None:
        text, written["targets"] = performance
        _replace_section(docs / "performance.md", key, "## Budgeted reproductions: inference benchmarks", text)
        written["files"].append(str(docs / "performance.md"))
    return written


def _benchmark_section(table: dict, benchmark: dict) -> tuple[str, list]:
    """performance.md's section for a bundle's benchmark, and the GPU targets it shows."""
    targets = gpu_targets(benchmark)
    # drawn again from the JSON, so bundles made by older versions read like new ones
    lines = [f"### {table['device']}, {table['started']} UTC", "",
             "Measured on the same machine by `segnet benchmark`, run by `segnet reproduce all` (or kept "
             "from an earlier try in the same folder).", "", markdown_table(benchmark)]
    if targets:
        lines += ["", f"| SegNet GPU target ({'x'.join(map(str, benchmark['size']))}) | measured | met |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['value'] if t['value'] is not None else '-'} | "
                  f"{'yes' if t['met'] else 'no'} |" for t in targets]
    return "\n".join(lines), targets
