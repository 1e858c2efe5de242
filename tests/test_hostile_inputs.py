"""The hostile-input suite (issue 24): inputs an attacker or a careless user gives, one case per
item with its expected verdict. Every case is built by code, small and fast; each section
belongs to one concern so the sections merge independently."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lpdvae import cli
from lpdvae.data.music.load import read_song
from lpdvae.data.music.phrases import song_phrases
from lpdvae.data.music.song import SongError
from lpdvae.data.redact import redact_uri
from lpdvae.errors import DataError
from lpdvae.io import read_jsonl
from lpdvae.params import ParamsError, load_params
from lpdvae.steps.ingest import ingest
from tests import songkit

REPO = Path(__file__).resolve().parents[1]

# --- credentials and bounded readers ---------------------------------------------------------

# URI -> what every record shows: userinfo in any spelling, secret-looking query and fragment
# keys masked; what reproduces the data (scheme, host, path, other keys) kept.
MASKING = {
    "s3://bucket/songs": "s3://bucket/songs",
    "s3://bucket/user@example.org/songs": "s3://bucket/user@example.org/songs",  # @ in a key
    "https://registry.example/@scope/corpus.tgz": "https://registry.example/@scope/corpus.tgz",
    "file:///data/a@b/corpus.tar": "file:///data/a@b/corpus.tar",
    "demo://bach-chorales?songs=3": "demo://bach-chorales?songs=3",
    "https://alice:hunter2@h/c.tgz": "https://***@h/c.tgz",
    "https://alice:p@ss@w0rd@h:8443/c.tgz": "https://***@h:8443/c.tgz",  # raw @ in the password
    "https://alice:pa/ss@h/c.tgz": "https://***@h/c.tgz",  # raw / in the password
    "https://alice:a/b@c@h/c.tgz?x=1": "https://***@h/c.tgz?x=1",
    "https://alice:p@ss/w0rd@h/c.tgz": "https://***@h/c.tgz",  # both
    "https://alice:pw@h/a@b/c.tgz": "https://***@b/c.tgz",  # ambiguous: masks more, never less
    "https://ghp_T0KEN@github.com/o/r.git": "https://***@github.com/o/r.git",  # a token as user
    "https://h/c.tgz?access_key=AK&auth=AU&pwd=PW&password=P&ok=1":
        "https://h/c.tgz?access_key=***&auth=***&pwd=***&password=***&ok=1",
    "https://h/c.tgz?key=K&api-key=K2&sig=S&Signature=S2&credential=C":
        "https://h/c.tgz?key=***&api-key=***&sig=***&Signature=***&credential=***",
    "https://h/c.tgz?X-Amz-Date=D&X-Amz-Security-Token=T&X-Goog-Signature=G":
        "https://h/c.tgz?X-Amz-Date=***&X-Amz-Security-Token=***&X-Goog-Signature=***",
    "https://h/c.tgz#access_token=AT&expires_in=3600": "https://h/c.tgz#access_token=***&expires_in=3600",
    "https://h/c.tgz?a=1;token=T": "https://h/c.tgz?a=1;token=***",  # ; separates keys too
    "https://h/c.tgz?token=a;b=c&z=1": "https://h/c.tgz?token=***&z=1",  # all of the value
    "https://h/c.tgz?api%5Fkey=K": "https://h/c.tgz?api%5Fkey=***",  # percent-encoded key
    'cannot GET "https://u:pw@h/c.tgz?token=T" (404)': 'cannot GET "https://***@h/c.tgz?token=***" (404)',
    "GET /c.tgz?X-Amz-Signature=S HTTP/1.1": "GET /c.tgz?X-Amz-Signature=*** HTTP/1.1",  # urllib3's log line
}


@pytest.mark.parametrize("uri", list(MASKING))
def test_masking_hides_every_credential_form(uri):
    assert redact_uri(uri) == MASKING[uri]


# data.source -> the part the refusal names (None: accepted)
SOURCES = {
    "s3://bucket/songs": None,
    "https://h/corpus.tar.gz": None,
    "demo://bach-chorales?songs=4": None,
    "s3://bucket/user@example.org/songs": None,
    "https://alice:hunter2@h/corpus.tar.gz": "userinfo (user:password@)",
    "https://alice:p@ss/w0rd@h/corpus.tar.gz": "userinfo (user:password@)",
    "https://ghp_T0KEN@h/corpus.tar.gz": "userinfo (user:password@)",
    "https://h/corpus.tar.gz?X-Amz-Signature=hunter2": "key 'X-Amz-Signature'",
    "https://h/corpus.tar.gz?access_key=hunter2": "key 'access_key'",
    "https://h/corpus.tar.gz?auth=hunter2": "key 'auth'",
    "https://h/corpus.tar.gz?sig=hunter2": "key 'sig'",
    "https://h/corpus.tar.gz#access_token=hunter2": "key 'access_token'",
}


@pytest.mark.parametrize("uri", list(SOURCES))
def test_a_data_source_carrying_a_credential_is_refused_naming_where_credentials_go(uri):
    if SOURCES[uri] is None:
        assert load_params(REPO / "params.yaml", {"data.source": uri}).data.source == uri
        return
    with pytest.raises(ParamsError) as err:
        load_params(REPO / "params.yaml", {"data.source": uri})
    message = str(err.value)
    assert "data.source" in message and SOURCES[uri] in message
    assert "LPDVAE_DATA_AWS_ACCESS_KEY_ID" in message and ".netrc" in message
    assert "hunter2" not in message and "T0KEN" not in message and "w0rd" not in message
    assert "\n" not in message


def test_a_profile_carrying_a_credential_is_refused_in_one_line(tmp_path, capsys):
    profile = tmp_path / "creds.yaml"
    profile.write_text("data:\n  source: https://alice:hunter2@h/corpus.tar.gz\n")
    assert cli.main(["--params", str(REPO / "params.yaml"), "--profile", str(profile), "status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "carries a credential" in err and "hunter2" not in err


def test_ingest_records_no_secret_of_a_source_given_on_the_command_line(tmp_path, caplog):
    """`lpdvae ingest --source` does not go through params: its rows and logs get the mask."""
    corpus = tmp_path / "corpus"
    (corpus / "a.mid").parent.mkdir()
    (corpus / "a.mid").write_bytes(b"MThd-a")
    uri = f"file://alice:p@ss@{corpus}?access_key=AK-S3CRET&auth=AU-S3CRET#access_token=AT-S3CRET"
    caplog.set_level("DEBUG")
    result = ingest(uri, tmp_path / "raw", load_params(REPO / "params.yaml"))
    [row] = read_jsonl(result.manifest)
    assert row["source"] == f"file://***@{corpus}?access_key=***&auth=***#access_token=***"
    records = [p.read_text() for p in (tmp_path / "raw").glob("*.jsonl")] + [caplog.text]
    assert not [s for s in ("p@ss", "S3CRET") for text in records if s in text]


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo.yaml")
    return tmp_path / "fifo.yaml"


def _big(tmp_path: Path) -> Path:
    (tmp_path / "big.yaml").write_text("# padding\n" * 110_000)  # 1.1 MB
    return tmp_path / "big.yaml"


def _latin1(tmp_path: Path) -> Path:
    (tmp_path / "latin1.yaml").write_bytes(b"data:\n  source: caf\xe9\n")
    return tmp_path / "latin1.yaml"


# a file named by --params / --profile -> the reason its one line gives
CLI_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "dev_zero": (lambda _: Path("/dev/zero"), "not a regular file (a character device)"),
    "folder": (lambda tmp: tmp, "not a regular file (a folder)"),
    "fifo": (_fifo, "not a regular file (a FIFO)"),
    "over_1_mb": (_big, "larger than a params file may be"),
    "not_utf8": (_latin1, "not UTF-8 text"),
    "missing": (lambda tmp: tmp / "nope.yaml", "file not found"),
}


@pytest.mark.parametrize("option", ["--params", "--profile"])
@pytest.mark.parametrize("case", list(CLI_FILES))
def test_a_cli_file_that_is_not_a_small_regular_file_is_refused_in_one_line(tmp_path, capsys, option, case):
    make, reason = CLI_FILES[case]
    path = make(tmp_path)
    argv = [option, str(path)] + (["--params", str(REPO / "params.yaml")] if option == "--profile" else [])
    assert cli.main([*argv, "status"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: {reason}" in err, err


# a params override -> the reason (ranges are checked before any key divides by another)
RANGES = {
    "representation.beat_resolution=0": ({"representation.beat_resolution": 0}, "must be > 0"),
    "representation.beat_resolution=-4": ({"representation.beat_resolution": -4}, "must be > 0"),
    "representation.source_resolution=0": ({"representation.source_resolution": 0}, "must be > 0"),
    "representation.beats_per_bar=0": ({"representation.beats_per_bar": 0}, "must be > 0"),
    "validate.max_polyphony=0": ({"validate.max_polyphony": 0}, "must be > 0"),
    "tensorize.max_empty_bars=-1": ({"tensorize.max_empty_bars": -1}, "must be >= 0"),
    "data.max_file_bytes=0": ({"data.max_file_bytes": 0}, "must be > 0"),
    "data.max_archive_ratio=0": ({"data.max_archive_ratio": 0}, "must be a finite number >= 1"),
    "data.max_archive_ratio=nan": ({"data.max_archive_ratio": float("nan")}, "must be a finite number >= 1"),
    "train.seed=-1": ({"train.seed": -1}, "must be in 0..4294967295"),
    "evaluate.seed=2**32": ({"evaluate.seed": 2**32}, "must be in 0..4294967295"),
    "register.seed=-1": ({"register.seed": -1}, "must be in 0..4294967295"),
    "train.grad_clip=inf": ({"train.grad_clip": float("inf")}, "must be finite and >= 0"),
    "evaluate.temperatures=[nan]": ({"evaluate.temperatures": [float("nan")]}, "must be > 0 and finite"),
    "evaluate.temperatures=[inf]": ({"evaluate.temperatures": [1.0, float("inf")]}, "must be > 0 and finite"),
    "evaluate.temperatures=[0]": ({"evaluate.temperatures": [0.0]}, "must be > 0 and finite"),
}


@pytest.mark.parametrize("case", list(RANGES))
def test_a_params_value_out_of_range_is_refused_naming_the_key(case):
    overrides, reason = RANGES[case]
    with pytest.raises(ParamsError) as err:
        load_params(REPO / "params.yaml", overrides)
    assert f"{next(iter(overrides))}: {reason}" in str(err.value)


def test_the_largest_seed_is_accepted():
    assert load_params(REPO / "params.yaml", {"train.seed": 2**32 - 1}).train.seed == 2**32 - 1


def _tampered_npz(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A one-bar LPD-style npz (24 steps a beat: 96 rows) with `change` applied to its members
    (arrays by name; `info.json` is raw bytes, as pypianoroll writes it)."""
    good = songkit.npz_song(path.with_name("tmp.npz"), seed=3, n_bars=1)
    with np.load(good) as z:
        members: dict[str, Any] = {k: z[k] for k in z.files}
    good.unlink()
    change(members)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, value in members.items():
            if isinstance(value, bytes):
                zf.writestr(name, value)
            else:
                buf = io.BytesIO()
                np.save(buf, value, allow_pickle=False)
                zf.writestr(f"{name}.npy", buf.getvalue())
    return path


def _resolution(members: dict[str, Any], res: int, steps: int) -> None:
    info = json.loads(members["info.json"])
    info["resolution"] = res
    members["info.json"] = json.dumps(info).encode()
    members["pianoroll_0_csc_shape"] = np.array([steps, 128])


def _set(key: str, index: int, value: int) -> Callable[[dict[str, Any]], None]:
    def change(arrays: dict[str, Any]) -> None:
        arrays[f"pianoroll_0_csc_{key}"] = arrays[f"pianoroll_0_csc_{key}"].astype(np.int64)
        arrays[f"pianoroll_0_csc_{key}"][index] = value
    return change


# a tampered npz -> (quarantine reason, detail)
NPZ_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "resolution_1e5_with_2e7_steps": (lambda a: _resolution(a, 100_000, 20_000_000), "too_large",
                                      "declares 20000000 time steps x 128 pitches at resolution 100000"),
    "index_out_of_range": (_set("indices", 0, 1_000_000), "npz_invalid", "row index 1000000 is outside 0..95"),
    "negative_index": (_set("indices", -1, -7), "npz_invalid", "row index -7 is outside 0..95"),
    "indptr_decreasing": (_set("indptr", 100, 0), "npz_invalid", "indptr must start at 0 and never decrease"),
    "indptr_past_the_indices": (_set("indptr", -1, 10**6), "npz_invalid", "indptr ends at 1000000"),
    "indptr_short": (lambda a: a.update(pianoroll_0_csc_indptr=a["pianoroll_0_csc_indptr"][:5]),
                     "npz_invalid", "indptr has 5 entries, expected 129"),
}


@pytest.mark.parametrize("reader", ["read_song", "song_phrases"])
@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_a_hostile_npz_is_a_quarantine_reason_before_anything_is_allocated(tmp_path, case, reader):
    """validate reads songs with read_song, tensorize with song_phrases: both refuse the file
    from its declared sizes and sparse arrays (no roll built, no scipy/numpy index trusted)."""
    change, reason, detail = NPZ_CASES[case]
    path = _tampered_npz(tmp_path / f"{case}.npz", change)
    p = songkit.params()
    with pytest.raises(SongError) as err:
        if reader == "read_song":
            read_song(path, p.representation, max_beats=p.validate.max_song_beats)
        else:
            song_phrases(path, p)
    assert (err.value.reason, detail in err.value.detail) == (reason, True), err.value.detail


def test_the_untampered_npz_still_loads(tmp_path):
    path = _tampered_npz(tmp_path / "good.npz", lambda arrays: None)
    p = songkit.params()
    assert read_song(path, p.representation, max_beats=p.validate.max_song_beats).multitrack.tracks


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


ZEROS = b"\0" * (2 << 20)  # 2 MiB of zeros deflate to ~2 KB: ~1000x
ARCHIVE_BOMBS = {"zip": _zip, "tar.gz": _tar_gz}


@pytest.mark.parametrize("kind", list(ARCHIVE_BOMBS))
def test_an_archive_unpacking_to_1000x_its_size_is_refused_in_one_line(tmp_path, kind):
    archive = ARCHIVE_BOMBS[kind](tmp_path / f"bomb.{kind}", {"a.mid": b"MThd-a", "pad.mid": ZEROS})
    with pytest.raises(DataError) as err:
        ingest(str(archive), tmp_path / "raw", load_params(REPO / "params.yaml"))
    message = str(err.value)
    assert f"bomb.{kind}" in message and "data.max_archive_ratio=200" in message and "\n" not in message
    assert not (tmp_path / "raw").exists()


def test_the_ratio_cap_is_a_param(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", {"a.mid": b"MThd-a", "pad.mid": ZEROS})
    result = ingest(str(archive), tmp_path / "raw", load_params(REPO / "params.yaml", {"data.max_archive_ratio": 5000}))
    assert result.n_files == 2


LONG = "l" * 300  # one component over NAME_MAX (255 bytes)
LONG_NAMES = {"file": f"{LONG}.mid", "folder": f"{LONG}/a.mid", "multibyte": "é" * 130 + ".mid"}


@pytest.mark.parametrize("kind", list(ARCHIVE_BOMBS))
@pytest.mark.parametrize("case", list(LONG_NAMES))
def test_a_member_name_longer_than_the_file_system_allows_is_skipped_with_a_reason(tmp_path, kind, case):
    name = LONG_NAMES[case]
    archive = ARCHIVE_BOMBS[kind](tmp_path / f"corpus.{kind}", {"ok.mid": b"MThd-ok", name: b"MThd-long"})
    result = ingest(str(archive), tmp_path / "raw", load_params(REPO / "params.yaml"))
    assert [r["path"] for r in read_jsonl(result.manifest)] == ["files/ok.mid"]
    [skip] = read_jsonl(tmp_path / "raw/skipped.jsonl")
    assert skip["path"] == name and "NAME_MAX 255" in skip["reason"]


def test_validate_quarantines_an_npz_with_out_of_range_indices_with_its_reason(tmp_path):
    """In the validate pool (one worker): the song gets a reason and a message, the batch goes on."""
    from lpdvae.steps.validate import validate

    raw = tmp_path / "raw"
    songkit.good_corpus(raw, n_midi=2, n_npz=1)
    _tampered_npz(raw / "files/bad/index.npz", NPZ_CASES["index_out_of_range"][0])
    songkit.write_manifest(raw)
    result = validate(raw, tmp_path / "v", songkit.params(**{"validate.max_bad_fraction": 0.5}))
    rows = {r["path"]: r for r in read_jsonl(tmp_path / "v/quarantine.jsonl")}
    assert rows["files/bad/index.npz"]["reason"] == "npz_invalid"
    assert "row index 1000000 is outside 0..95" in rows["files/bad/index.npz"]["detail"]
    assert result.n_accepted == 3


# --- tensor shards streamed from S3 (issue 23) -----------------------------------------------

def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


SHARD_SHAPE = [1, 1, 4, 8]  # tracks, bars, steps, pitches: 2 packed bytes per step
SHARD_N = 3
# what lies under the prefix (and the phrase count index.json gives its shard) -> the one line that
# refuses it: nothing larger than the index allows is read, and no index may allow more than 1 GiB
S3_TENSOR_CASES: dict[str, tuple[dict[str, bytes], int, str]] = {
    "no_index": ({}, SHARD_N, "index.json: cannot read: NoSuchKey"),
    "index_not_json": ({"index.json": b"{not json"}, SHARD_N, "index.json: not valid JSON"),
    "index_claiming_a_huge_shard": ({}, 10**9, "index.json: shards/train-00000.npy would hold 8000000000 bytes"),
    "shard_larger_than_its_index_says": (
        {"shards/train-00000.npy": _npy(np.zeros((SHARD_N * 1000, 1, 1, 4, 2), np.uint8))}, SHARD_N,
        "shards/train-00000.npy: 24128 bytes, more than the 4120 it may hold"),
    "shard_not_npy": ({"shards/train-00000.npy": b"\x00" * 64}, SHARD_N, "shards/train-00000.npy: unreadable shard"),
    "shard_of_another_shape": ({"shards/train-00000.npy": _npy(np.zeros((SHARD_N, 1, 1, 4, 1), np.uint8))}, SHARD_N,
                               "shards/train-00000.npy: shard has shape (3, 1, 1, 4, 1) uint8, index says"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(S3_TENSOR_CASES))
def test_a_hostile_s3_tensor_prefix_is_refused_in_one_line(case, s3_bucket):
    import boto3

    from lpdvae.data.shard_stream import S3PhraseDataset

    objects, n, message = S3_TENSOR_CASES[case]
    index = {"shape": SHARD_SHAPE, "tracks": ["a"],
             "splits": {"train": {"shards": [{"file": "shards/train-00000.npy", "n": n}], "n": n}}}
    if case != "no_index":
        objects = {"index.json": json.dumps(index).encode(), **objects}
    for key, body in objects.items():
        boto3.client("s3").put_object(Bucket=s3_bucket, Key=f"{case}/{key}", Body=body)
    with pytest.raises(DataError) as err:
        S3PhraseDataset(f"s3://{s3_bucket}/{case}", "train")[0]
    assert f"s3://{s3_bucket}/{case}/{message}" in str(err.value) and "\n" not in str(err.value)
# --- a stored folder a fanned-out task reads part of (lpdvae.data.store, validation.parts) ------------

def _stored(tmp_path: Path) -> Path:
    """A stored raw folder of one song (`files/a.mid`)."""
    (tmp_path / "raw" / "files").mkdir(parents=True)
    (tmp_path / "raw" / "files" / "a.mid").write_bytes(b"MThd-song")
    return tmp_path / "raw"


GOOD_SHA = hashlib.sha256(b"MThd-song").hexdigest()
# manifest row a chunk task is given -> what its fetch says (one line), nothing left behind
STORED_ROWS = {
    "a path out of the folder": ({"path": "../out/side.mid", "sha256": GOOD_SHA}, "path traversal"),
    "an absolute path": ({"path": "/etc/passwd", "sha256": GOOD_SHA}, "absolute path refused"),
    "bytes that are not the manifest's": ({"path": "files/a.mid", "sha256": "0" * 64}, "is not the manifest's"),
    "a file gone from the store": ({"path": "files/b.mid", "sha256": GOOD_SHA}, "files/b.mid: cannot read"),
    "a file over data.max_file_bytes": ({"path": "files/a.mid", "sha256": GOOD_SHA, "limit": 4},
                                        "larger than data.max_file_bytes=4"),
}


@pytest.mark.parametrize("case", list(STORED_ROWS))
def test_a_chunk_fetch_from_a_stored_folder_refuses_in_one_line(tmp_path, case):
    from lpdvae.data.store import fetch_songs, locate

    row, expected = STORED_ROWS[case]
    limit = row.pop("limit", 1 << 20)
    with pytest.raises(DataError, match=expected) as caught:
        fetch_songs(locate(str(_stored(tmp_path))), [row], tmp_path / "chunk", limit)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"], "nothing fetched or made outside the store"


def test_a_stored_folder_on_another_scheme_is_refused_naming_what_works():
    from lpdvae.data.store import locate

    with pytest.raises(DataError, match="gs://b/raw: not an s3:// or minio:// prefix"):
        locate("gs://b/raw")


@pytest.mark.parametrize("damage", ["missing", "not an npz", "fewer fingerprints"])
def test_a_validate_part_that_is_not_one_is_refused_naming_it(tmp_path, damage):
    from lpdvae.validation.parts import ValidatePart, read_part, write_part
    from lpdvae.validation.tune_groups import SongContent

    song = SongContent("files/a.mid", "s", "", np.arange(3), np.arange(4))
    write_part(ValidatePart([{"path": "files/a.mid", "sha256": "s"}], {"files/a.mid": {"path": "files/a.mid"}},
                            {"files/a.mid": song}), tmp_path / "part")
    npz = tmp_path / "part" / "songs.npz"
    if damage == "missing":
        npz.unlink()
    elif damage == "not an npz":
        npz.write_bytes(b"not a zip")
    else:
        (tmp_path / "part" / "songs.jsonl").write_text('["files/a.mid", "s", ""]\n["files/b.mid", "t", ""]\n')
    with pytest.raises(DataError, match=str(tmp_path / "part")):
        read_part(tmp_path / "part")
