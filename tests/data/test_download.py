"""Tests for mrc.data.download, served from a local 127.0.0.1 HTTP server only."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from mrc.data.download import (
    DownloadError,
    download_file,
    ensure_dureader_robust,
    md5_file,
    resolve_data_root,
    safe_extract_tar,
    sha256_file,
)


class _Server:
    def __init__(self, directory: Path):
        self.directory = directory
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep pytest output clean
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path):
    srv_dir = tmp_path / "srv"
    srv_dir.mkdir()
    srv = _Server(srv_dir)
    yield srv
    srv.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data))


FAKE = {
    name: json.dumps({"data": [{"paragraphs": [], "split": name}]}).encode()
    for name in ("train.json", "dev.json", "test.json")
}


def _make_dureader_archive(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in FAKE.items():
            _add_bytes(tar, f"dureader_robust-data/{name}", data)
    return path


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


FAKE_MD5 = {name: _md5(data) for name, data in FAKE.items()}


# ---------------------------------------------------------------- resolve_data_root

def test_resolve_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("MRC_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.setenv("MRC_DATA", "")
    assert resolve_data_root(None) == tmp_path / "xdg" / "mrc-zh" / "data"
    monkeypatch.delenv("MRC_DATA")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root(None) == tmp_path / "home" / ".cache" / "mrc-zh" / "data"
    assert not (tmp_path / "home").exists()  # resolving must not create anything


def test_resolve_data_root_relative_and_tilde(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root("data") == tmp_path / "data"
    assert resolve_data_root("~/d") == tmp_path / "home" / "d"
    assert resolve_data_root(Path("x")).is_absolute()


# ---------------------------------------------------------------- download_file

def test_download_file_success_with_checksums(server, tmp_path):
    data = b"hello world\n" * 1000
    (server.directory / "f.bin").write_bytes(data)
    dest = tmp_path / "out" / "f.bin"
    got = download_file(server.url("f.bin"), dest, md5=_md5(data),
                        sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert got == dest and dest.read_bytes() == data
    assert not dest.with_suffix(".bin.part").exists()
    assert md5_file(dest) == _md5(data)
    assert sha256_file(dest) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", ["md5", "sha256"])
def test_download_file_checksum_mismatch(server, tmp_path, kind):
    data = b"payload"
    (server.directory / "f.bin").write_bytes(data)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as ei:
        download_file(server.url("f.bin"), dest, progress=False, **{kind: "0" * 8})
    msg = str(ei.value)
    assert "0" * 8 in msg and server.url("f.bin") in msg
    assert (_md5(data) if kind == "md5" else hashlib.sha256(data).hexdigest()) in msg
    assert not dest.exists() and not dest.with_suffix(".bin.part").exists()


def test_download_file_unreachable(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/nothing.tar.gz"
    dest = tmp_path / "nothing.tar.gz"
    with pytest.raises(DownloadError) as ei:
        download_file(url, dest, timeout=5, progress=False)
    assert url in str(ei.value) and str(dest) in str(ei.value)
    assert "manually" in str(ei.value)
    assert not dest.exists() and not dest.with_suffix(".gz.part").exists()


def test_download_file_http_404(server, tmp_path):
    dest = tmp_path / "missing.json"
    with pytest.raises(DownloadError, match="missing.json"):
        download_file(server.url("missing.json"), dest, progress=False)
    assert not dest.exists() and not dest.with_suffix(".json.part").exists()


# ---------------------------------------------------------------- safe_extract_tar

def test_safe_extract_tar_ok(tmp_path):
    archive = _make_dureader_archive(tmp_path / "a.tar.gz")
    files = safe_extract_tar(archive, tmp_path / "x")
    assert sorted(p.name for p in files) == ["dev.json", "test.json", "train.json"]
    assert all(p.is_file() for p in files)
    assert (tmp_path / "x" / "dureader_robust-data" / "train.json").read_bytes() == FAKE["train.json"]


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "fifo", "chardev"])
def test_safe_extract_tar_rejects(tmp_path, kind):
    archive = tmp_path / "bad.tar"
    absolute = tmp_path / "abs_evil"
    with tarfile.open(archive, "w") as tar:
        _add_bytes(tar, "good.txt", b"ok")  # comes first: must not be extracted either
        if kind == "dotdot":
            _add_bytes(tar, "../evil", b"x")
            bad = "../evil"
        elif kind == "absolute":
            _add_bytes(tar, str(absolute), b"x")
            bad = str(absolute)
        elif kind == "symlink":
            _add_bytes(tar, "link", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")
            bad = "link"
        elif kind == "hardlink":
            _add_bytes(tar, "hard", b"", type=tarfile.LNKTYPE, linkname="good.txt")
            bad = "hard"
        elif kind == "fifo":
            _add_bytes(tar, "pipe", b"", type=tarfile.FIFOTYPE)
            bad = "pipe"
        else:
            _add_bytes(tar, "dev", b"", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
            bad = "dev"
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError) as ei:
        safe_extract_tar(archive, dest)
    assert str(archive) in str(ei.value) and bad in str(ei.value)
    assert not dest.exists() or not any(dest.iterdir())
    assert not (tmp_path / "evil").exists() and not absolute.exists()


def test_safe_extract_tar_corrupt(tmp_path):
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(b"not a tarball")
    with pytest.raises(DownloadError, match="junk.tar.gz"):
        safe_extract_tar(archive, tmp_path / "d")


# ---------------------------------------------------------------- ensure_dureader_robust

NEEDED = ["dureader_robust/train.json", "dureader_robust/dev.json", "cmrc2018/dev.json"]


def _serve_archive(server) -> str:
    _make_dureader_archive(server.directory / "dureader_robust-data.tar.gz")
    return server.url("dureader_robust-data.tar.gz")


def test_ensure_end_to_end_and_cache(server, tmp_path):
    url = _serve_archive(server)
    root = tmp_path / "data"
    written = ensure_dureader_robust(root, NEEDED, url=url, progress=False, checksums=FAKE_MD5)
    assert sorted(written) == ["dureader_robust/dev.json", "dureader_robust/test.json",
                               "dureader_robust/train.json"]
    for name, data in FAKE.items():
        assert (root / "dureader_robust" / name).read_bytes() == data
    assert not (root / "cmrc2018").exists()
    assert len(server.requests) == 1
    assert (root / ".downloads" / "dureader_robust-data.tar.gz").is_file()
    assert not list(root.glob(".extract-*"))  # temp dir cleaned up

    # All needed files present: nothing to do, no request.
    assert ensure_dureader_robust(root, NEEDED, url=url, progress=False, checksums={}) == []
    # A file went missing: restored from the cached archive without downloading again.
    (root / "dureader_robust" / "dev.json").unlink()
    again = ensure_dureader_robust(root, NEEDED, url=url, progress=False, checksums=FAKE_MD5)
    assert again == ["dureader_robust/dev.json"]
    assert (root / "dureader_robust" / "dev.json").read_bytes() == FAKE["dev.json"]
    assert len(server.requests) == 1


def test_ensure_does_not_overwrite_existing(server, tmp_path):
    url = _serve_archive(server)
    root = tmp_path / "data"
    (root / "dureader_robust").mkdir(parents=True)
    (root / "dureader_robust" / "dev.json").write_text("mine")
    written = ensure_dureader_robust(root, NEEDED, url=url, progress=False, checksums=FAKE_MD5)
    assert "dureader_robust/dev.json" not in written
    assert "dureader_robust/train.json" in written
    assert (root / "dureader_robust" / "dev.json").read_text() == "mine"
    assert (root / "dureader_robust" / "train.json").read_bytes() == FAKE["train.json"]


def test_ensure_noop_when_present_or_not_dureader(server, tmp_path):
    root = tmp_path / "data"
    (root / "dureader_robust").mkdir(parents=True)
    (root / "dureader_robust" / "train.json").write_text("{}")
    bogus = server.url("does-not-exist.tar.gz")
    assert ensure_dureader_robust(root, ["dureader_robust/train.json", "cmrc2018/train.json"],
                                  url=bogus, progress=False) == []
    assert ensure_dureader_robust(root, ["cmrc2018/dev.json"], url=bogus, progress=False) == []
    assert server.requests == []
    assert not (root / ".downloads").exists()


def test_ensure_checksum_mismatch(server, tmp_path):
    url = _serve_archive(server)
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as ei:
        ensure_dureader_robust(root, NEEDED, url=url, progress=False,
                               checksums={"train.json": "f" * 32})
    assert "f" * 32 in str(ei.value) and _md5(FAKE["train.json"]) in str(ei.value)
    assert not (root / "dureader_robust" / "train.json").exists()
    assert not list(root.glob(".extract-*"))


def test_ensure_default_checksum_rejects_fake_train(server, tmp_path):
    url = _serve_archive(server)
    with pytest.raises(DownloadError, match="800a3dcb742f9fdf9b11e0a83433d4be"):
        ensure_dureader_robust(tmp_path / "data", ["dureader_robust/train.json"],
                               url=url, progress=False)


def test_every_installed_file_is_checked(server, tmp_path):
    """A tampered archive that carries only dev.json is refused by dev.json's published md5 (issue 16.6),
    and a file with no known digest is never installed unchecked."""
    with tarfile.open(server.directory / "dev-only.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("dureader_robust-data/dev.json")
        info.size = len(FAKE["dev.json"])
        tar.addfile(info, io.BytesIO(FAKE["dev.json"]))
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="md5 mismatch for dev.json.*ae73cec081eaa28a735204c4898a2222"):
        ensure_dureader_robust(root, ["dureader_robust/dev.json"], url=server.url("dev-only.tar.gz"), progress=False)
    assert not (root / "dureader_robust" / "dev.json").exists()
    with pytest.raises(DownloadError, match="dev.json in .* has no known md5 .* refusing to install it unchecked"):
        ensure_dureader_robust(tmp_path / "d2", ["dureader_robust/dev.json"], url=server.url("dev-only.tar.gz"),
                               checksums={}, progress=False)
    assert not (tmp_path / "d2" / "dureader_robust").exists()


def test_unreachable_download_names_data_root_and_env(tmp_path):
    with pytest.raises(DownloadError, match=r"data\.root=DIR \(or \$MRC_DATA\)"):
        ensure_dureader_robust(tmp_path / "data", ["dureader_robust/dev.json"], url="http://127.0.0.1:9/x.tar.gz",
                               progress=False)


def test_ensure_archive_sha256_redownloads_bad_cache(server, tmp_path):
    url = _serve_archive(server)
    good_sha = sha256_file(server.directory / "dureader_robust-data.tar.gz")
    root = tmp_path / "data"
    cached = root / ".downloads" / "dureader_robust-data.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stale junk")
    written = ensure_dureader_robust(root, ["dureader_robust/dev.json"], url=url,
                                     checksums={}, archive_sha256=good_sha, progress=False)
    assert "dureader_robust/dev.json" in written
    assert len(server.requests) == 1 and sha256_file(cached) == good_sha

    with pytest.raises(DownloadError, match="sha256 mismatch"):
        ensure_dureader_robust(tmp_path / "other", ["dureader_robust/dev.json"], url=url,
                               checksums={}, archive_sha256="0" * 64, progress=False)
