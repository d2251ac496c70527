"""`fab backup --download`, its one seam faked (the SFTP copy): the manifest comes from
the server, so it must never steer a write outside the folder, and the files are private
from their first byte."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from deploy.backups import fetch
from deploy.errors import DeployError
from deploy.ssh.layout import Layout
from deploy.servertool.digests import checksums

LAYOUT = Layout("/srv/app")
BACKUP_ID = "20261124120000-manual"


class FakeRemote:
    """Serves files from a local folder standing in for the backup host's /srv/app/backups;
    records each local file's mode while it is being written."""

    def __init__(self, backups: Path) -> None:
        self.backups, self.modes = backups, []
        self.conn = self

    def get(self, remote_path: str, local) -> None:
        self.modes.append(stat.S_IMODE(os.fstat(local.fileno()).st_mode))
        local.write((self.backups / Path(remote_path).relative_to(LAYOUT.backups)).read_bytes())


def server_backup(tmp_path: Path, files: dict[str, bytes]) -> tuple[FakeRemote, dict]:
    backups = tmp_path / "server"
    dump = backups / f"{BACKUP_ID}.dump"
    dump.mkdir(parents=True)
    for name, data in files.items():
        (dump / name).write_bytes(data)
    digest, per_file = checksums(str(dump))
    manifest = {"id": BACKUP_ID, "sha256": digest, "files": per_file}
    (backups / f"{BACKUP_ID}.json").write_text("{}")
    return FakeRemote(backups), manifest


def test_a_download_is_private_from_its_first_byte_and_checked(tmp_path):
    remote, manifest = server_backup(tmp_path, {"toc.dat": b"toc", "3001.dat.gz": b"rows"})
    os.umask(0o022)
    local = fetch(remote, LAYOUT, manifest, tmp_path / "here")
    assert sorted(p.name for p in local.iterdir()) == ["3001.dat.gz", "toc.dat"]
    assert remote.modes == [0o600, 0o600, 0o600]
    assert stat.S_IMODE(local.stat().st_mode) == 0o700


@pytest.mark.parametrize("name", ["../../outside", "/etc/passwd", "..", "sub/dir", ".hidden", "a\nb"])
def test_a_manifest_naming_a_path_outside_the_folder_is_refused_and_nothing_is_written(tmp_path, name):
    remote, manifest = server_backup(tmp_path, {"toc.dat": b"toc"})
    manifest["files"][name] = "0" * 64
    target = tmp_path / "deep" / "here"
    with pytest.raises(DeployError, match="not plain file names"):
        fetch(remote, LAYOUT, manifest, target)
    assert not target.exists() and remote.modes == []


@pytest.mark.parametrize("backup_id", ["../../20261124120000-x", "/tmp/20261124120000-x", "x"])
def test_a_manifest_with_an_id_that_is_not_a_backup_id_is_refused(tmp_path, backup_id):
    remote, manifest = server_backup(tmp_path, {"toc.dat": b"toc"})
    manifest["id"] = backup_id
    with pytest.raises(DeployError, match="is not a backup id"):
        fetch(remote, LAYOUT, manifest, tmp_path / "here")


def test_a_download_never_writes_through_a_link_or_over_a_file(tmp_path):
    remote, manifest = server_backup(tmp_path, {"toc.dat": b"toc"})
    here = tmp_path / "here"
    here.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (here / f"{BACKUP_ID}.json").symlink_to(victim)
    with pytest.raises(DeployError, match="already exists"):
        fetch(remote, LAYOUT, manifest, here)
    assert victim.read_text() == "keep me"
