"""Dataset download helpers: data-root resolution, verified downloads, safe tar extraction."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

logger = logging.getLogger("mrc.data.download")

DUREADER_ROBUST_URL = "https://dataset-bj.cdn.bcebos.com/qianyan/dureader_robust-data.tar.gz"
DUREADER_ROBUST_FILES = ("train.json", "dev.json", "test.json")
# md5 of every file the official archive holds, as the dataset loaders of PaddleNLP publish them.
# A file is installed only when it matches its digest here (or the whole archive matched a given sha256).
DUREADER_ROBUST_MD5 = {"train.json": "800a3dcb742f9fdf9b11e0a83433d4be",
                       "dev.json": "ae73cec081eaa28a735204c4898a2222",
                       "test.json": "e0e8aa5c7b6d11b6fc3935e29fc7746f"}

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download, checksum or archive-safety failure."""

    user_facing = True


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def resolve_data_root(root: str | os.PathLike | None) -> Path:
    """Return the data root: explicit arg, else $MRC_DATA, else $XDG_CACHE_HOME/mrc-zh/data."""
    if root is not None and str(root) != "":
        return _absolute(root)
    env = os.environ.get("MRC_DATA")
    if env:
        return _absolute(env)
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return _absolute(cache) / "mrc-zh" / "data"


def _hash_file(path: str | os.PathLike, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def md5_file(path: str | os.PathLike) -> str:
    """Return the hex md5 of a file, read in chunks."""
    return _hash_file(path, "md5")


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    return _hash_file(path, "sha256")


def _manual_hint(url: str, dest: Path) -> str:
    data_root = dest.parent.parent if dest.parent.name == ".downloads" else dest.parent
    return (f"If this machine has no internet access, download {url} elsewhere and place it manually at {dest}, "
            f"or point data.root=DIR (or $MRC_DATA) at a folder that already holds the data files "
            f"(now: {data_root})")


def download_file(url: str, dest: Path, *, md5: str | None = None, sha256: str | None = None,
                  timeout: float = 60, progress: bool = True) -> Path:
    """Stream `url` to `dest` via a .part file, verify checksums, then atomically rename."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    hashers = {name: hashlib.new(name) for name, want in (("md5", md5), ("sha256", sha256)) if want}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            written = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=None if progress else True) as bar:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    for h in hashers.values():
                        h.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        # http.client does not flag a connection closed early, so check the length ourselves.
        if total is not None and written != total:
            raise OSError(f"connection closed after {written} of {total} bytes")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"Failed to download {url} to {dest}: {exc}. "
                            f"{_manual_hint(url, dest)}") from exc
    for name, want in (("md5", md5), ("sha256", sha256)):
        if want and hashers[name].hexdigest() != want.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(f"{name} mismatch for {url}: expected {want.lower()}, "
                                f"got {hashers[name].hexdigest()}")
    os.replace(part, dest)
    return dest


def safe_extract_tar(archive: Path, dest: Path) -> list[Path]:
    """Extract a .tar/.tar.gz into `dest` after rejecting links, devices and path escapes."""
    archive, dest = Path(archive), Path(dest)
    root = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            # Vet every member before writing anything, so a bad archive leaves no trace.
            for m in members:
                problem = None
                if m.name.startswith(("/", "\\")) or os.path.isabs(m.name):
                    problem = "absolute path"
                elif m.issym() or m.islnk():
                    problem = "link member"
                elif not (m.isfile() or m.isdir()):
                    problem = "device/fifo/special member"
                elif not (root / m.name).resolve().is_relative_to(root):
                    problem = "path escapes destination"
                if problem:
                    raise DownloadError(f"Refusing to extract {archive}: {problem} in member {m.name!r}")
            dest.mkdir(parents=True, exist_ok=True)
            # The stdlib "data" filter (3.11.4+/3.12) is a second line of defence.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:
                tar.extractall(dest, members=members)
    except tarfile.TarError as exc:
        raise DownloadError(f"Cannot read archive {archive}: {exc}") from exc
    return [dest / m.name for m in members if m.isfile()]


def ensure_dureader_robust(root: Path, needed: list[str], *, url: str = DUREADER_ROBUST_URL,
                           checksums: dict[str, str] | None = None,
                           archive_sha256: str | None = None, progress: bool = True) -> list[str]:
    """Download/extract DuReader-robust into root/dureader_robust if a needed file is missing."""
    root = Path(root)
    out_dir = root / "dureader_robust"
    wanted = []
    for rel in needed:
        parts = Path(rel).parts
        if len(parts) == 2 and parts[0] == "dureader_robust" and parts[1] in DUREADER_ROBUST_FILES:
            wanted.append(parts[1])
    if all((out_dir / name).exists() for name in wanted):
        return []
    checksums = DUREADER_ROBUST_MD5 if checksums is None else checksums

    archive = root / ".downloads" / (Path(urllib.parse.urlparse(url).path).name
                                     or "dureader_robust-data.tar.gz")
    if archive.exists() and archive_sha256 and sha256_file(archive) != archive_sha256.lower():
        logger.warning("Cached %s fails its sha256 check; downloading again", archive)
        archive.unlink()
    if archive.exists():
        logger.info("Using cached archive %s", archive)
    else:
        logger.info("Downloading DuReader-robust from %s to %s", url, archive)
        download_file(url, archive, sha256=archive_sha256, progress=progress)

    # Extract under root so the final moves are same-filesystem renames.
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        extracted = safe_extract_tar(archive, tmp)
        found: dict[str, Path] = {}
        for path in sorted(extracted, key=lambda p: len(p.parts)):  # prefer shallowest match
            if path.name in DUREADER_ROBUST_FILES:
                found.setdefault(path.name, path)
        missing = [name for name in wanted if name not in found and not (out_dir / name).exists()]
        if missing:
            raise DownloadError(f"Archive {archive} (from {url}) lacks {missing}; "
                                f"place the files manually under {out_dir}")
        todo = [name for name in DUREADER_ROBUST_FILES
                if name in found and not (out_dir / name).exists()]
        # Verify everything before moving anything, so a bad file never lands in out_dir.
        for name in todo:
            want = checksums.get(name)
            if not want:
                if archive_sha256:  # the archive as a whole matched its sha256 above
                    continue
                raise DownloadError(f"{name} in {archive} has no known md5 and no archive sha256 was given; "
                                    f"refusing to install it unchecked. Place the files under {out_dir} yourself")
            got = md5_file(found[name])
            if got != want.lower():
                raise DownloadError(f"md5 mismatch for {name} from {url}: expected {want.lower()}, "
                                    f"got {got}; delete {archive} and retry")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in todo:
            os.replace(found[name], out_dir / name)
            written.append(f"dureader_robust/{name}")
            logger.info("Wrote %s", out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written
