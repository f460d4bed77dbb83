"""Redraw docs/results/full-res-cpu-curves.png from the runs recorded under docs/results/.

    python benchmarks/full_res_curves.py [--out PATH]

One line per full-resolution CamVid run: validation mIoU against wall-clock hours, read from
each run's metrics.csv. A run that continues others (``--init-from`` their best.pt) is drawn
from where they ended: its hours are offset by the sum of their final ``hours``. A run that
is not kept under docs/results/ enters the sum as a number, with a comment saying which.
Add a run by adding a row to RUNS.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from segnet.report.plots import curves_by_hours

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"

# The 2026-12-03 rerun of the natural-weights SegNet stage (runs/segnet-natural): the same rows
# as camvid-segnet-natural-fullres-crops-cpu-14ep but 0.9003 wall hours, not 0.7557.
SEGNET_NATURAL_RERUN_HOURS = 0.9003

BASIC_64 = "camvid-segnet_basic-fullres-crops-amx-64ep"
BASIC_52 = "camvid-segnet_basic-fullres-crops-cpu-continued-52ep"
BASIC_WHOLE = "camvid-segnet_basic-fullres-whole-cpu-continued-12ep"
BASIC_SQRT = "camvid-segnet_basic-fullres-whole-cpu-sqrt"
SEGNET_MFB_16 = "camvid-segnet-mfb-finetune-fullres-crops-cpu-16ep"
SEGNET_WHOLE = "camvid-segnet-whole-cpu-continued-3ep"
SEGNET_WHOLE_2 = "camvid-segnet-whole-cpu-continued-again-7ep"

# (folder under docs/results, legend label, the runs it continues in order: folders or hours)
RUNS: list[tuple[str, str, tuple[str | float, ...]]] = [
    (BASIC_64, "SegNet-Basic, 0.05 cosine, 64 ep (Xeon AMX)", ()),
    (BASIC_52, "SegNet-Basic, continued: 0.02 cosine, 52 more ep (EPYC)", (BASIC_64,)),
    (BASIC_WHOLE, "SegNet-Basic, then whole frames: 0.01 cosine, 12 more ep (EPYC)", (BASIC_64, BASIC_52)),
    (BASIC_SQRT, "SegNet-Basic, then softened MFB (sqrt): 0.01 cosine, 4 more ep (EPYC; shipped)",
     (BASIC_64, BASIC_52, BASIC_WHOLE)),
    ("camvid-segnet_basic-fullres-whole-cpu-sqrt-again-12ep",
     "SegNet-Basic, softened MFB again: 0.005 cosine, 12 more ep (EPYC)", (BASIC_64, BASIC_52, BASIC_WHOLE, BASIC_SQRT)),
    ("camvid-segnet_basic-fullres-crops-cpu-19ep", "SegNet-Basic, 0.1 cosine, 19 ep (EPYC, 1 thread)", ()),
    ("camvid-segnet-pretrained-fullres-crops-cpu-22ep", "SegNet, pretrained: AdamW 3e-4, natural, 22 ep (EPYC)", ()),
    ("camvid-segnet-natural-fullres-crops-cpu-14ep", "SegNet, pretrained again: natural, 14 ep (EPYC)", ()),
    ("camvid-segnet-mfb-finetune-fullres-crops-cpu-26ep", "SegNet, then MFB fine-tune: AdamW 1e-4, 26 more ep (EPYC)",
     ("camvid-segnet-natural-fullres-crops-cpu-14ep",)),
    (SEGNET_MFB_16, "SegNet, natural 14 ep, then MFB 16 ep (EPYC, 2026-12-03)", (SEGNET_NATURAL_RERUN_HOURS,)),
    (SEGNET_WHOLE, "SegNet, then whole frames: AdamW 5e-5, 3 more ep (EPYC)",
     (SEGNET_NATURAL_RERUN_HOURS, SEGNET_MFB_16)),
    (SEGNET_WHOLE_2, "SegNet, whole frames again: AdamW 5e-5, 7 more ep (EPYC, 2026-12-03)",
     (SEGNET_NATURAL_RERUN_HOURS, SEGNET_MFB_16, SEGNET_WHOLE)),
    ("camvid-segnet-whole-cpu-sqrt-6ep", "SegNet, then softened MFB (sqrt): AdamW 5e-5, 6 more ep (EPYC, 2026-12-03)",
     (SEGNET_NATURAL_RERUN_HOURS, SEGNET_MFB_16, SEGNET_WHOLE, SEGNET_WHOLE_2)),
    ("camvid-segnet-modern-mfb-fullres-crops-cpu-4ep", "SegNet, modern: AdamW 1e-3, MFB, stopped at 4 ep (EPYC)", ()),
    ("camvid-segnet-finetune-fullres-crops-cpu-12ep", "SegNet, finetune: SGD 0.01, MFB, 12 ep (EPYC, 1 thread)", ()),
]

TARGETS = {"SegNet (3,433 training images), test mIoU 60.1": 60.1,
           "Table 1 SegNet-Basic, test mIoU 47.7": 47.7}


def read_rows(folder: str) -> list[dict]:
    """The rows of docs/results/FOLDER/metrics.csv."""
    with open(RESULTS / folder / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def final_hours(run: str | float) -> float:
    """Wall hours a run took: a number as given, a folder's from its last metrics.csv row."""
    return float(run) if isinstance(run, (int, float)) else float(read_rows(run)[-1]["hours"])


def offset_rows(folder: str, before: tuple[str | float, ...]) -> list[dict]:
    """FOLDER's metrics.csv rows with ``hours`` moved past the runs it continues."""
    offset = sum(final_hours(run) for run in before)
    return [{**row, "hours": str(float(row["hours"]) + offset)} for row in read_rows(folder)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "full-res-cpu-curves.png")
    args = parser.parse_args()
    runs = {label: offset_rows(folder, before) for folder, label, before in RUNS}
    path = curves_by_hours(runs, args.out, targets=TARGETS,
                           title="CamVid validation mIoU, full resolution (180x240 crops; whole frames where named)")
    print(f"{len(runs)} runs -> {path}")


if __name__ == "__main__":
    main()
