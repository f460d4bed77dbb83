"""reproduce import of hostile bundles (issue 35, item 4): links, oversized or non-text
files, malformed JSON and missing keys are refused naming the file, with docs/ untouched."""

import json
import os

import pytest

from segnet.cli import main
from segnet.reproduce.bundle import import_bundle

TABLE = {"device": "NVIDIA H200", "started": "2026-12-04 11:26:23", "budget_seconds": 360, "rows": []}
BENCHMARK = {"device": "NVIDIA H200", "size": [360, 480], "matmul_peak_gflops_per_s": 1.0, "matmul_dtype": "bf16",
             "torch": "2", "rows": []}


def _bundle(tmp_path, **files):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    contents = {"table.json": json.dumps(TABLE), "table.md": "| model |\n|---|\n", **files}
    for name, content in contents.items():
        if content is None:
            continue
        (bundle / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return bundle


@pytest.fixture
def docs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text("# Results\n")
    (docs / "performance.md").write_text("# Performance\n")
    return docs


def _docs_state(docs):
    return {p.relative_to(docs): p.read_bytes() for p in docs.rglob("*") if p.is_file()}


def test_a_good_bundle_imports(tmp_path, docs):
    bundle = _bundle(tmp_path, **{"benchmark.json": json.dumps(BENCHMARK)})
    written = import_bundle(bundle, docs)
    assert "NVIDIA H200" in (docs / "results.md").read_text() and len(written["files"]) == 2


def _link(tmp_path, name, target):
    def make(bundle):
        (bundle / name).unlink(missing_ok=True)
        os.symlink(target, bundle / name)
    return make


@pytest.mark.parametrize("case, files, make, words", [
    ("table.md links to /etc/passwd", {}, "link:table.md:/etc/passwd", "is a link"),
    ("curves.png links to /etc/hostname", {}, "link:curves.png:/etc/hostname", "is a link"),
    ("a 2 MB table.md", {"table.md": b"|" * 2_000_000}, None, "over the 1 MB"),
    ("NUL bytes in table.md", {"table.md": b"\0" * 1000}, None, "not UTF-8 text"),
    ("malformed table.json", {"table.json": "{\n"}, None, "table.json: not valid JSON"),
    ("table.json without device", {"table.json": json.dumps({"started": "x", "budget_seconds": 1})}, None,
     "table.json: key 'device'"),
    ("benchmark.json without size", {"benchmark.json": json.dumps({"rows": [{"model": "segnet", "variants": {
        "bf16": {"latency_ms": 1.0}}}]})}, None, "benchmark.json: key"),
    ("malformed benchmark.json", {"benchmark.json": "[1, 2"}, None, "benchmark.json: not valid JSON"),
])
def test_a_hostile_bundle_is_refused_and_docs_stay_untouched(tmp_path, docs, capsys, case, files, make, words):
    bundle = _bundle(tmp_path, **files)
    if make:
        _, name, target = make.split(":")
        _link(tmp_path, name, target)(bundle)
    before = _docs_state(docs)
    status = main(["reproduce", "import", str(bundle), "--docs", str(docs)])
    err = capsys.readouterr().err
    assert status == 2 and words in err and "this is a bug" not in err, err
    assert _docs_state(docs) == before


def test_docs_that_is_a_file_is_named_as_docs(tmp_path, capsys):
    bundle = _bundle(tmp_path)
    (tmp_path / "notes.md").write_text("mine\n")
    assert main(["reproduce", "import", str(bundle), "--docs", str(tmp_path / "notes.md")]) == 2
    err = capsys.readouterr().err
    assert "--docs" in err and "--out" not in err and ".tmp" not in err
    assert (tmp_path / "notes.md").read_text() == "mine\n"
