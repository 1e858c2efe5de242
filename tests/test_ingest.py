"""ingest: sources (folder, demo, S3, HTTP archive), manifest contract, idempotence, archive
safety and crash safety. Song files are tiny opaque bytes: ingest never parses them."""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import io
import logging
import os
import tarfile
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lpdvae.data.redact import redact_uri
from lpdvae.data.sources import s3 as s3_source
from lpdvae.errors import DataError
from lpdvae.io import read_jsonl
from lpdvae.params import Params, load_params
from lpdvae.steps import ingest as ingest_mod
from lpdvae.steps.ingest import ingest

REPO = Path(__file__).resolve().parents[1]
SONGS = {"a.mid": b"MThd-a", "sub/b.MIDI": b"MThd-bb", "c.npz": b"PK-ccc"}


def params(**overrides: object) -> Params:
    return load_params(REPO / "params.yaml", {k.replace("__", "."): v for k, v in overrides.items()})


def make_folder(root: Path, files: dict[str, bytes] = SONGS) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def snapshot(out: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under out: (content, inode, mtime_ns)."""
    return {p.relative_to(out).as_posix(): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(out.rglob("*")) if p.is_file()}


def tarball(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, data: bytes | None = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, data


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served by http.server on 127.0.0.1: (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served_tarball(http_root: tuple[Path, str]) -> tuple[str, str]:
    """(URL, sha256) of a tar.gz holding SONGS plus a README that must be ignored."""
    root, base = http_root
    data = tarball([member(rel, body) for rel, body in SONGS.items()] + [member("README.txt", b"hi")])
    (root / "corpus.tar.gz").write_bytes(data)
    return f"{base}/corpus.tar.gz", hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------- contract


def test_local_folder_writes_files_and_sorted_manifest(tmp_path):
    src = make_folder(tmp_path / "src", {**SONGS, "notes.txt": b"ignored"})
    result = ingest(str(src), tmp_path / "raw", params())
    rows = read_jsonl(result.manifest)
    assert [r["path"] for r in rows] == ["files/a.mid", "files/c.npz", "files/sub/b.MIDI"]
    assert rows[0] == {"path": "files/a.mid", "sha256": hashlib.sha256(b"MThd-a").hexdigest(),
                       "bytes": 6, "source": str(src), "format": "midi"}
    assert [r["format"] for r in rows] == ["midi", "npz", "midi"]
    assert (tmp_path / "raw/files/sub/b.MIDI").read_bytes() == b"MThd-bb"
    assert (result.n_files, result.n_bytes, result.n_copied, result.n_ignored) == (3, 19, 3, 1)


def test_second_ingest_gives_identical_manifest_and_copies_nothing(tmp_path):
    src = make_folder(tmp_path / "src")
    out = tmp_path / "raw"
    ingest(str(src), out, params())
    before = snapshot(out)
    again = ingest(str(src), out, params())
    assert again.n_copied == 0
    assert snapshot(out) == before  # same bytes, same inodes, same mtimes


def test_changed_file_is_recopied_and_vanished_file_removed(tmp_path):
    src = make_folder(tmp_path / "src")
    out = tmp_path / "raw"
    ingest(str(src), out, params())
    (src / "a.mid").write_bytes(b"MThd-new")
    (src / "c.npz").unlink()
    result = ingest(str(src), out, params())
    assert result.n_copied == 1
    assert (out / "files/a.mid").read_bytes() == b"MThd-new"
    assert not (out / "files/c.npz").exists()
    assert [r["path"] for r in read_jsonl(out / "manifest.jsonl")] == ["files/a.mid", "files/sub/b.MIDI"]


def test_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ingest(str(tmp_path / "nope"), tmp_path / "raw", params())


def test_oversized_file_refused(tmp_path):
    src = make_folder(tmp_path / "src", {"big.mid": b"x" * 100, "ok.mid": b"y"})
    with pytest.raises(DataError, match=r"big\.mid.*max_file_bytes"):
        ingest(str(src), tmp_path / "raw", params(data__max_file_bytes=50))


def test_crash_mid_ingest_leaves_previous_output_intact(tmp_path, monkeypatch):
    src = make_folder(tmp_path / "src")
    out = tmp_path / "raw"
    ingest(str(src), out, params())
    before = snapshot(out)
    (src / "a.mid").write_bytes(b"MThd-changed")
    (src / "z.mid").write_bytes(b"MThd-z")
    real_place, calls = ingest_mod.place, []

    def place_then_crash(*args):
        calls.append(args)
        if len(calls) > 1:
            raise OSError("disk full")
        return real_place(*args)

    monkeypatch.setattr(ingest_mod, "place", place_then_crash)
    with pytest.raises(OSError, match="disk full"):
        ingest(str(src), out, params())
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "src"]  # no temp folder left


def test_demo_source_renders_chorales(tmp_path):
    result = ingest("demo://bach-chorales?songs=2", tmp_path / "raw", params())
    rows = read_jsonl(result.manifest)
    assert result.n_files == 2
    assert {r["format"] for r in rows} == {"midi"}
    assert {r["source"] for r in rows} == {"demo://bach-chorales?songs=2"}


def test_demo_source_with_fewer_songs_keeps_a_prefix_without_copying(tmp_path):
    out = tmp_path / "raw"
    two = read_jsonl(ingest("demo://bach-chorales?songs=2", out, params()).manifest)
    result = ingest("demo://bach-chorales?songs=1", out, params())
    (one,) = read_jsonl(result.manifest)
    assert {**one, "source": two[0]["source"]} == two[0]
    assert result.n_copied == 0
    assert sorted(p.name for p in (out / "files").iterdir()) == [Path(one["path"]).name]


def test_source_folder_containing_the_output_refused(tmp_path):
    src = make_folder(tmp_path / "src")
    with pytest.raises(DataError, match="overlap"):
        ingest(str(src), src / "raw", params())


def test_ingest_cli_prints_one_line_summary(tmp_path, capsys):
    src = make_folder(tmp_path / "src")
    parser = argparse.ArgumentParser()
    ingest_mod.register_cli(parser.add_subparsers())
    args = parser.parse_args(["ingest", "--source", str(src), "--out", str(tmp_path / "raw")])
    assert args.func(args, params()) == 0
    assert capsys.readouterr().out.strip().startswith("ingest: 3 files (19 bytes), 3 copied, 0 ignored")


# ------------------------------------------------------------------------------- S3


@pytest.fixture
def s3_songs(s3_server: str, s3_bucket: str) -> str:
    """s3:// URI of a prefix holding SONGS and a readme, next to a look-alike prefix."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    for rel, data in SONGS.items():
        s3.put_object(Bucket=s3_bucket, Key=f"songs/{rel}", Body=data)
    s3.put_object(Bucket=s3_bucket, Key="songs/readme.txt", Body=b"-")
    s3.put_object(Bucket=s3_bucket, Key="songs2/other.mid", Body=b"not under the prefix")
    return f"s3://{s3_bucket}/songs"


@pytest.fixture
def s3_calls(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """S3 API operations ingest sends, counted by name (ListObjectsV2, GetObject, ...)."""
    calls: Counter = Counter()
    real_client = s3_source.s3_client

    def counting_client(*args):
        client = real_client(*args)
        client.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
        return client

    monkeypatch.setattr(s3_source, "s3_client", counting_client)
    return calls


@pytest.mark.slow
def test_s3_prefix_is_ingested(tmp_path, s3_songs):
    result = ingest(s3_songs, tmp_path / "raw", params())
    rows = read_jsonl(result.manifest)
    assert [r["path"] for r in rows] == ["files/a.mid", "files/c.npz", "files/sub/b.MIDI"]
    assert (tmp_path / "raw/files/c.npz").read_bytes() == b"PK-ccc"
    assert rows[1]["sha256"] == hashlib.sha256(b"PK-ccc").hexdigest()
    assert (result.n_ignored, {r["source"] for r in rows}) == (1, {s3_songs})


@pytest.mark.slow
def test_s3_unchanged_objects_are_not_downloaded_again(tmp_path, s3_songs, s3_calls):
    out = tmp_path / "raw"
    ingest(s3_songs, out, params())
    before = snapshot(out)
    s3_calls.clear()
    again = ingest(s3_songs, out, params())
    assert (again.n_copied, s3_calls["GetObject"]) == (0, 0)
    assert snapshot(out) == before


@pytest.mark.slow
def test_s3_changed_object_is_downloaded_again(tmp_path, s3_server, s3_songs, s3_calls):
    import boto3

    out = tmp_path / "raw"
    ingest(s3_songs, out, params())
    bucket = s3_songs.split("/")[2]
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=bucket, Key="songs/a.mid", Body=b"MThd-A")
    s3_calls.clear()
    result = ingest(s3_songs, out, params())
    assert (result.n_copied, s3_calls["GetObject"]) == (1, 1)
    assert (out / "files/a.mid").read_bytes() == b"MThd-A"


def pod_copy(out: Path, where: Path) -> Path:
    """The output as a fresh cluster pod sees it: DVC checked it out elsewhere, no `.cache/`."""
    import shutil

    shutil.copytree(out, where / "raw")
    return where / "raw"


@pytest.mark.slow
def test_s3_rerun_on_a_fresh_pod_downloads_nothing(tmp_path, s3_songs, s3_calls):
    first = ingest(s3_songs, tmp_path / "raw", params())
    out = pod_copy(tmp_path / "raw", tmp_path / "pod")
    s3_calls.clear()
    again = ingest(s3_songs, out, params())
    assert (again.n_copied, s3_calls["GetObject"]) == (0, 0)
    assert (out / "manifest.jsonl").read_bytes() == first.manifest.read_bytes()
    assert all(r["source_token"].endswith(f":{r['bytes']}") for r in read_jsonl(out / "manifest.jsonl"))


@pytest.mark.slow
def test_s3_changed_object_is_the_only_download_on_a_fresh_pod(tmp_path, s3_server, s3_songs, s3_calls):
    import boto3

    ingest(s3_songs, tmp_path / "raw", params())
    out = pod_copy(tmp_path / "raw", tmp_path / "pod")
    boto3.client("s3", endpoint_url=s3_server).put_object(Bucket=s3_songs.split("/")[2], Key="songs/c.npz",
                                                          Body=b"PK-new")
    s3_calls.clear()
    result = ingest(s3_songs, out, params())
    assert (result.n_copied, s3_calls["GetObject"]) == (1, 1)
    assert (out / "files/c.npz").read_bytes() == b"PK-new"


@pytest.mark.slow
def test_s3_token_is_not_trusted_when_the_previous_file_no_longer_matches(tmp_path, s3_songs, s3_calls):
    out = tmp_path / "raw"
    ingest(s3_songs, out, params())
    (out / "files/a.mid").unlink()
    (out / "files/a.mid").write_bytes(b"MThd-x")  # same size, other bytes
    s3_calls.clear()
    result = ingest(s3_songs, out, params())
    assert (result.n_copied, s3_calls["GetObject"]) == (1, 1)
    assert (out / "files/a.mid").read_bytes() == b"MThd-a"


@pytest.mark.slow
def test_s3_concurrency_does_not_change_the_manifest(tmp_path, s3_server, s3_bucket, s3_calls):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    for i in range(24):
        s3.put_object(Bucket=s3_bucket, Key=f"many/{i % 3}/s{i:02d}.mid", Body=b"MThd" + bytes([i]) * (i + 1))
    one = ingest(f"s3://{s3_bucket}/many", tmp_path / "one", params(data__ingest_concurrency=1))
    eight = ingest(f"s3://{s3_bucket}/many", tmp_path / "eight", params(data__ingest_concurrency=8))
    assert (one.n_copied, eight.n_copied, s3_calls["GetObject"]) == (24, 24, 48)
    assert one.manifest.read_bytes() == eight.manifest.read_bytes()


@pytest.mark.slow
def test_s3_listing_follows_every_page(tmp_path, s3_songs, s3_calls, monkeypatch):
    monkeypatch.setattr(s3_source, "S3_PAGE_SIZE", 2)
    result = ingest(s3_songs, tmp_path / "raw", params())
    assert (result.n_files, result.n_ignored) == (3, 1)
    assert s3_calls["ListObjectsV2"] == 2  # 4 keys, 2 per page


@pytest.mark.slow
def test_s3_object_gone_after_listing_names_the_key(tmp_path, s3_server, s3_songs, monkeypatch):
    import boto3

    bucket = s3_songs.split("/")[2]
    real_place = ingest_mod.place

    def delete_then_place(*args):
        boto3.client("s3", endpoint_url=s3_server).delete_object(Bucket=bucket, Key="songs/c.npz")
        return real_place(*args)

    monkeypatch.setattr(ingest_mod, "place", delete_then_place)
    with pytest.raises(DataError, match=rf"s3://{bucket}/songs/c\.npz: cannot download"):
        ingest(s3_songs, tmp_path / "raw", params())
    assert not (tmp_path / "raw").exists()


@pytest.mark.slow
def test_s3_missing_bucket_is_a_data_error(tmp_path, s3_server):
    with pytest.raises(DataError, match="s3://no-such-bucket-xyz/songs"):
        ingest("s3://no-such-bucket-xyz/songs", tmp_path / "raw", params())


# ------------------------------------------------------------------------------- HTTP


def test_http_tarball_with_matching_sha256_is_ingested(tmp_path, served_tarball):
    url, sha = served_tarball
    result = ingest(url, tmp_path / "raw", params(data__sha256=sha))
    assert [r["path"] for r in read_jsonl(result.manifest)] == ["files/a.mid", "files/c.npz", "files/sub/b.MIDI"]
    assert (result.n_files, result.n_ignored) == (3, 1)


def test_http_download_retries_a_transient_503(tmp_path, served_tarball, monkeypatch):
    url, sha = served_tarball
    failures = [503]
    real_do_get = http.server.SimpleHTTPRequestHandler.do_GET

    def flaky_get(self):
        if failures:
            self.send_error(failures.pop())
            return
        real_do_get(self)

    monkeypatch.setattr(http.server.SimpleHTTPRequestHandler, "do_GET", flaky_get)
    assert ingest(url, tmp_path / "raw", params(data__sha256=sha)).n_files == 3
    assert failures == []


def test_http_download_restarts_after_the_connection_drops_mid_body(tmp_path, served_tarball, monkeypatch):
    url, sha = served_tarball
    drops = [1]
    real_do_get = http.server.SimpleHTTPRequestHandler.do_GET

    def truncated_get(self):
        if not drops:
            return real_do_get(self)
        drops.pop()
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 100)
        self.close_connection = True

    monkeypatch.setattr(http.server.SimpleHTTPRequestHandler, "do_GET", truncated_get)
    assert ingest(url, tmp_path / "raw", params(data__sha256=sha)).n_files == 3
    assert drops == []


def test_http_sha256_mismatch_refused(tmp_path, served_tarball):
    url, _ = served_tarball
    with pytest.raises(DataError, match="sha256 mismatch"):
        ingest(url, tmp_path / "raw", params(data__sha256="0" * 64))
    assert not (tmp_path / "raw").exists()


def test_http_without_sha256_refused(tmp_path, served_tarball):
    url, _ = served_tarball
    with pytest.raises(DataError, match="data.sha256 is required"):
        ingest(url, tmp_path / "raw", params())


# ------------------------------------------------------------------------------- archive attacks

ATTACKS = {
    "traversal": ([member("../evil.mid")], "path traversal"),
    "absolute": ([member("/etc/evil.mid")], "absolute path"),
    "archive_size": ([member("a.mid", b"x" * 60), member("b.mid", b"y" * 60)], "max_archive_bytes"),
    "member_count": ([member(f"{i}.mid") for i in range(4)], "max_archive_members"),
    "member_size": ([member("big.mid", b"x" * 200)], "max_file_bytes"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_archive_attack_refused_before_extraction(tmp_path, attack):
    members, reason = ATTACKS[attack]
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tarball(members))
    limits = params(data__max_archive_bytes=100, data__max_archive_members=3, data__max_file_bytes=150)
    with pytest.raises(DataError, match=reason) as err:
        ingest(str(archive), tmp_path / "raw", limits)
    assert "evil.tar.gz" in str(err.value)
    assert not (tmp_path / "raw").exists()
    assert not (tmp_path / "evil.mid").exists() and not (tmp_path.parent / "evil.mid").exists()


LINK_MEMBERS = {
    "symlink": (member("link.mid", None, tarfile.SYMTYPE, "/etc/passwd"), "symbolic link member"),
    "hardlink": (member("hard.mid", None, tarfile.LNKTYPE, "a.mid"), "hard link member"),
    "device": (member("dev.mid", None, tarfile.CHRTYPE), "device"),
}


@pytest.mark.parametrize("kind", sorted(LINK_MEMBERS))
def test_archive_link_or_device_member_is_skipped_with_a_reason(tmp_path, kind):
    bad, reason = LINK_MEMBERS[kind]
    archive = tmp_path / "corpus.tar.gz"
    archive.write_bytes(tarball([member("a.mid", b"MThd"), bad]))
    result = ingest(str(archive), tmp_path / "raw", params())
    assert [r["path"] for r in read_jsonl(result.manifest)] == ["files/a.mid"]
    [skip] = read_jsonl(tmp_path / "raw/skipped.jsonl")
    assert skip["path"] == bad[0].name and reason in skip["reason"]
    assert sorted(p.name for p in (tmp_path / "raw/files").iterdir()) == ["a.mid"]


def test_zip_archive_is_ingested_without_macos_resource_forks(tmp_path):
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for rel, data in SONGS.items():
            zf.writestr(rel, data)
        zf.writestr("__MACOSX/._a.mid", b"resource fork")
    result = ingest(str(archive), tmp_path / "raw", params())
    assert [r["path"] for r in read_jsonl(result.manifest)] == ["files/a.mid", "files/c.npz", "files/sub/b.MIDI"]
    assert result.n_ignored == 1


def test_large_non_song_archive_member_is_ignored_not_refused(tmp_path):
    archive = tmp_path / "corpus.tar.gz"
    archive.write_bytes(tarball([member("a.mid", b"MThd"), member("notes.txt", b"n" * 200)]))
    result = ingest(str(archive), tmp_path / "raw", params(data__max_file_bytes=150))
    assert (result.n_files, result.n_ignored) == (1, 1)


def test_corrupt_archive_member_is_a_data_error(tmp_path):
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.mid", b"MThd-original")
    data = archive.read_bytes()
    archive.write_bytes(data.replace(b"MThd-original", b"MThd-corrupt!", 1))  # CRC no longer matches
    with pytest.raises(DataError, match=r"corpus\.zip: member 'a\.mid': cannot extract"):
        ingest(str(archive), tmp_path / "raw", params())


def test_zip_symlink_member_is_skipped(tmp_path):
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link.mid")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
        zf.writestr("a.mid", b"MThd")
    result = ingest(str(archive), tmp_path / "raw", params())
    assert (result.n_files, result.n_skipped) == (1, 1)
    assert read_jsonl(tmp_path / "raw/skipped.jsonl")[0]["path"] == "link.mid"


# ------------------------------------------------------------------------------- hostile inputs (issue 11)


def skipped(out: Path) -> dict[str, str]:
    return {r["path"]: r["reason"] for r in read_jsonl(out / "skipped.jsonl")}


def test_symlink_out_of_a_source_folder_is_not_followed(tmp_path):
    src = make_folder(tmp_path / "src")
    secret = make_folder(tmp_path / "outside", {"secret.mid": b"SECRET"})
    (src / "passwd.mid").symlink_to("/etc/passwd")
    (src / "secret.mid").symlink_to(secret / "secret.mid")
    (src / "linked").symlink_to(secret, target_is_directory=True)
    result = ingest(str(src), tmp_path / "raw", params())
    assert [r["path"] for r in read_jsonl(result.manifest)] == ["files/a.mid", "files/c.npz", "files/sub/b.MIDI"]
    assert set(skipped(tmp_path / "raw")) == {"passwd.mid", "secret.mid", "linked"}
    assert all("symbolic link" in reason for reason in skipped(tmp_path / "raw").values())
    copied = b"".join(p.read_bytes() for p in (tmp_path / "raw/files").rglob("*") if p.is_file())
    assert b"SECRET" not in copied and b"root:" not in copied


def test_tar_made_with_dash_C_dir_dot_is_accepted(tmp_path):
    import subprocess

    src = make_folder(tmp_path / "src")
    archive = tmp_path / "corpus.tar.gz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(src), "."], check=True)
    result = ingest(str(archive), tmp_path / "raw", params())
    assert [r["path"] for r in read_jsonl(result.manifest)] == ["files/a.mid", "files/c.npz", "files/sub/b.MIDI"]


@pytest.mark.parametrize("order", [("x.npz", "x.npz/y.npz"), ("x.npz/y.npz", "x.npz")])
def test_archive_with_a_file_and_a_folder_of_the_same_name_skips_the_nested_one(tmp_path, order):
    archive = tmp_path / "corpus.tar.gz"
    archive.write_bytes(tarball([member(name, b"PK-" + name.encode()) for name in order]))
    result = ingest(str(archive), tmp_path / "raw", params())
    assert [r["path"] for r in read_jsonl(result.manifest)] == ["files/x.npz"]
    assert skipped(tmp_path / "raw") == {"x.npz/y.npz": "path is under 'x.npz', which is a file"}


@pytest.mark.parametrize("order", [("x.npz", "x.npz/y.npz"), ("x.npz/y.npz", "x.npz")])
def test_zip_with_a_file_and_a_folder_of_the_same_name_skips_the_nested_one(tmp_path, order):
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in order:
            zf.writestr(name, b"PK")
    ingest(str(archive), tmp_path / "raw", params())
    assert list(skipped(tmp_path / "raw")) == ["x.npz/y.npz"]


@pytest.mark.slow
def test_s3_keys_with_a_file_and_a_folder_of_the_same_name_skip_the_nested_one(tmp_path, s3_server, s3_bucket):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.put_object(Bucket=s3_bucket, Key="clash/x.npz/y.npz", Body=b"PK-y")
    s3.put_object(Bucket=s3_bucket, Key="clash/x.npz", Body=b"PK-x")
    result = ingest(f"s3://{s3_bucket}/clash", tmp_path / "raw", params())
    assert [r["path"] for r in read_jsonl(result.manifest)] == ["files/x.npz"]
    assert list(skipped(tmp_path / "raw")) == ["x.npz/y.npz"]


def test_local_file_name_that_is_not_utf8_is_skipped(tmp_path):
    src = make_folder(tmp_path / "src")
    (src / os.fsdecode(b"caf\xe9.mid")).write_bytes(b"MThd-latin1")
    result = ingest(str(src), tmp_path / "raw", params())
    assert result.n_files == 3
    assert skipped(tmp_path / "raw") == {"caf\\xe9.mid": "file name is not valid UTF-8"}
    (tmp_path / "raw/manifest.jsonl").read_text(encoding="utf-8")  # every record stays UTF-8


def test_tar_member_name_that_is_not_utf8_is_skipped(tmp_path):
    import subprocess

    src = make_folder(tmp_path / "src", {"a.mid": b"MThd"})
    (src / os.fsdecode(b"caf\xe9.mid")).write_bytes(b"MThd-latin1")
    archive = tmp_path / "corpus.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(src), "."], check=True)
    result = ingest(str(archive), tmp_path / "raw", params())
    assert (result.n_files, list(skipped(tmp_path / "raw"))) == (1, ["caf\\xe9.mid"])


SECRETS = ("hunter2", "SIGNATURE-abc", "CREDENTIAL-xyz", "TOKEN-123")


def test_credentials_in_the_source_uri_reach_no_record(tmp_path, served_tarball, caplog):
    url, sha = served_tarball
    host = url.split("://", 1)[1]
    url = (f"http://alice:hunter2@{host}?X-Amz-Credential=CREDENTIAL-xyz&X-Amz-Date=20260101"
           f"&X-Amz-Signature=SIGNATURE-abc&token=TOKEN-123")
    caplog.set_level(logging.DEBUG)
    result = ingest(url, tmp_path / "raw", params(data__sha256=sha))
    rows = read_jsonl(result.manifest)
    assert rows[0]["source"] == (f"http://***@{host}?X-Amz-Credential=***&X-Amz-Date=***"
                                 "&X-Amz-Signature=***&token=***")
    records = [p.read_text() for p in (tmp_path / "raw").glob("*.jsonl")] + [caplog.text]
    assert not [s for s in SECRETS for text in records if s in text]


@pytest.mark.parametrize(("uri", "expected"), [
    ("s3://bucket/songs", "s3://bucket/songs"),
    ("demo://bach-chorales?songs=3", "demo://bach-chorales?songs=3"),
    ("/data/lpd 5/songs", "/data/lpd 5/songs"),
    ("https://u:p@h/x.tgz?Signature=s&Expires=9&AWSAccessKeyId=k", "https://***@h/x.tgz?Signature=***&Expires=9&AWSAccessKeyId=***"),
    ("https://ghp_tok@github.com/o/r.git", "https://***@github.com/o/r.git"),
])
def test_redact_uri_keeps_what_reproduces_and_masks_credentials(uri, expected):
    assert redact_uri(uri) == expected


def test_demo_source_takes_a_song_count_or_all() -> None:
    from lpdvae.data.sources.demo import demo_song_count

    assert demo_song_count("demo://bach-chorales?songs=6") == 6
    assert demo_song_count("demo://bach-chorales?songs=all") is None  # every usable chorale
    for bad in ("demo://bach-chorales?songs=many", "demo://bach-chorales?songs=0"):
        with pytest.raises(DataError, match="songs must be"):
            demo_song_count(bad)
