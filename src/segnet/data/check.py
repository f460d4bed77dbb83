"""Dataset validation: counts, class histogram, and every problem with the file that has it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image
from tqdm import tqdm

from ..progress import bar_disabled
from .datasets import collecting_unpaired
from .io import DataError, image_conversion_note


@dataclass
class SplitReport:
    split: str
    samples: int = 0
    class_pixels: list[int] = field(default_factory=list)
    ignored_pixels: int = 0
    problems: list[str] = field(default_factory=list)  # errors: the sample cannot be used
    notes: list[str] = field(default_factory=list)  # handled automatically (conversions)
    class_names: list[str] = field(default_factory=list)


def check_split(dataset, split: str, progress: bool = True) -> SplitReport:
    """Load every sample of ``dataset``; collect problems instead of stopping at the first."""
    meta = dataset.meta
    report = SplitReport(split, len(dataset), [0] * meta.num_classes, class_names=list(meta.class_names))
    if len(dataset) == 0:
        report.problems.append(f"{split}: the split is empty")
        return report
    counts = torch.zeros(meta.num_classes, dtype=torch.long)
    for index in tqdm(range(len(dataset)), desc=f"checking {split}", unit="img",
                      disable=bar_disabled(progress), leave=False):
        pairs = getattr(dataset, "pairs", None)
        if pairs is not None:
            try:
                with Image.open(pairs[index][0]) as image:
                    note = image_conversion_note(image.mode)
                if note:
                    report.notes.append(f"{pairs[index][0]}: {note}")
            except Exception:
                pass  # unreadable files are reported by load() below
        try:
            _, label = dataset.load(index)
        except DataError as error:
            report.problems.append(str(error))
            continue
        valid = label[label != meta.ignore_index]
        counts += torch.bincount(valid.flatten(), minlength=meta.num_classes)[: meta.num_classes]
        report.ignored_pixels += int((label == meta.ignore_index).sum())
    report.class_pixels = counts.tolist()
    return report


def check_dataset(build, splits: list[str], progress: bool = True) -> list[SplitReport]:
    """Check each split; ``build(split)`` returns the dataset (a failure to index it is a problem)."""
    reports = []
    for split in splits:
        try:
            with collecting_unpaired() as unpaired:
                dataset = build(split)
        except (DataError, FileNotFoundError) as error:
            reports.append(SplitReport(split, problems=[str(error)]))
            continue
        report = check_split(dataset, split, progress)
        report.problems[:0] = unpaired  # images without a label, then what the labelled ones have
        reports.append(report)
    return reports


def format_reports(reports: list[SplitReport], class_names: list[str] | None = None) -> str:
    """Counts per split, a class-pixel table, then every problem and note."""
    class_names = class_names or next((r.class_names for r in reports if r.class_names), None)
    lines = []
    for r in reports:
        lines.append(f"{r.split}: {r.samples} samples, {len(r.problems)} problems, {len(r.notes)} notes")
    if class_names and any(r.class_pixels for r in reports):
        lines.append("")
        lines.append(f"{'class':<16}" + "".join(f"{r.split:>14}" for r in reports))
        for c, name in enumerate(class_names):
            cells = "".join(f"{(r.class_pixels[c] if r.class_pixels else 0):>14,}" for r in reports)
            lines.append(f"{name:<16}{cells}")
        lines.append(f"{'(ignored)':<16}" + "".join(f"{r.ignored_pixels:>14,}" for r in reports))
    for r in reports:
        for p in r.problems:
            lines.append(f"PROBLEM {p}")
        for n in r.notes:
            lines.append(f"note    {n}")
    return "\n".join(lines)
