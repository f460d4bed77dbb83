"""Reproducing the paper: its tables trained and tested (paper.py), the budgeted run of
everything on one machine (budget.py) and the bundle it brings back (bundle.py), and the
demo that tells the story on generated scenes (demo.py). Sits above engine/ and the
benchmark, and is imported by the CLI only."""
