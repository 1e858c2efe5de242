"""params.yaml parsed once into frozen dataclasses.

Every step receives a `Params`; nothing else reads params.yaml. Unknown keys, missing keys and
wrong types fail at load time with the file, the dotted key and the reason, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lpdvae.io import NotRegularFile, regular_file_size


class ParamsError(ValueError):
    """A params file that cannot be used; the message names the file, the key and the reason."""


@dataclass(frozen=True)
class DataParams:
    source: str
    sha256: str | None
    max_file_bytes: int
    max_archive_bytes: int
    max_archive_members: int
    max_archive_ratio: float
    ingest_concurrency: int


TRACK_KINDS = ("monophonic", "polyphonic", "drums")
# The generated-vs-data statistics evaluation can gate on (lpdvae.evaluation.metrics and .voices).
STATISTICS = ("empty_bar_rate", "n_pitch_classes_used", "qualified_note_rate", "polyphonic_rate",
              "tonal_distance", "drum_in_pattern_rate",
              "voice_range_adherence", "voice_crossing_rate", "parallel_motion_rate")


@dataclass(frozen=True)
class TrackSpec:
    name: str
    kind: str  # monophonic | polyphonic | drums: the decoder's output distribution
    program: int
    is_drum: bool
    names: tuple[str, ...]
    programs: tuple[int, ...]


@dataclass(frozen=True)
class RepresentationParams:
    source_resolution: int
    beat_resolution: int
    beats_per_bar: int
    lowest_pitch: int
    n_pitches: int
    n_bars: int

    @property
    def steps_per_bar(self) -> int:
        return self.beat_resolution * self.beats_per_bar


@dataclass(frozen=True)
class ValidateParams:
    max_song_beats: int
    max_bad_fraction: float
    min_bars: int
    min_notes: int
    max_pitch_out_of_range_fraction: float
    max_empty_bar_ratio: float
    max_polyphony: int
    require_time_signature: str | None
    tune_similarity: float  # melody n-gram Jaccard from which two songs are one tune (one group)
    duplicate_similarity: float  # note-set Jaccard from which a song duplicates its group's twin


@dataclass(frozen=True)
class DriftParams:
    """validate's comparison with the champion's training data (lpdvae.validation.drift)."""

    p_value: float
    min_distance: float
    threshold: float
    stop_on_drift: bool


@dataclass(frozen=True)
class TensorizeParams:
    hop_bars: int
    max_empty_bars: int
    shard_size: int
    workers: int
    split_seed: str
    train_fraction: float
    val_fraction: float
    min_split_phrases: int


@dataclass(frozen=True)
class ModelParams:
    step_embedding: int
    encoder_hidden: int
    latent_dim: int
    bar_latent_dim: int
    bar_prior: str
    bar_harmony: bool
    track_presence: bool
    bar_echo: bool
    prior_components: int
    prior: str
    conductor_hidden: int
    decoder_hidden: int
    dropout: float
    voice_chain: bool


@dataclass(frozen=True)
class TrainParams:
    seed: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    lr_schedule: str
    warmup_steps: int
    grad_clip: float
    beta_max: float
    beta_warmup_steps: int
    free_nats: float
    hold_pitch_weight: float
    transpose: int
    checkpoint_every_steps: int
    early_stopping_patience: int
    nproc: int
    device: str
    precision: str
    compile: bool
    num_workers: int
    data_order: str


@dataclass(frozen=True)
class EvaluateParams:
    seed: int
    n_samples: int
    n_generated: int
    temperatures: tuple[float, ...]
    render_audio: bool
    soundfont: str
    statistics: tuple[str, ...]
    stat_rel_tolerance: float
    stat_abs_floor: float
    min_note_f1: float
    min_margin: float
    min_unique_fraction: float
    copy_match: float
    copy_alpha: float
    fidelity_quantile: float
    bootstrap_resamples: int
    confidence: float


@dataclass(frozen=True)
class RegisterParams:
    model_name: str
    auto_promote: bool
    bootstrap_resamples: int
    confidence: float
    seed: int


@dataclass(frozen=True)
class MlflowParams:
    tracking_uri: str | None
    experiment: str


@dataclass(frozen=True)
class Params:
    data: DataParams
    tracks: tuple[TrackSpec, ...]
    representation: RepresentationParams
    validate: ValidateParams
    drift: DriftParams
    tensorize: TensorizeParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    register: RegisterParams
    mlflow: MlflowParams

    @property
    def track_names(self) -> list[str]:
        return [t.name for t in self.tracks]

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def flat(self) -> dict[str, Any]:
        """Dotted keys to scalars (lists as JSON), the shape MLflow params and KFP want."""
        return _flatten(self.to_dict())

    def digest(self) -> str:
        """sha256 of the canonical JSON form: equal params give an equal hash on any runner."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "representation.beat_resolution": (lambda v: v > 0, "must be > 0"),
    "representation.source_resolution": (lambda v: v > 0, "must be > 0"),
    "representation.beats_per_bar": (lambda v: v > 0, "must be > 0"),
    "representation.n_pitches": (lambda v: 0 < v <= 128, "must be in 1..128"),
    "representation.lowest_pitch": (lambda v: 0 <= v < 128, "must be in 0..127"),
    "representation.n_bars": (lambda v: v > 0, "must be > 0"),
    "validate.max_bad_fraction": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "validate.tune_similarity": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "validate.duplicate_similarity": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "validate.max_song_beats": (lambda v: v > 0, "must be > 0"),
    "drift.p_value": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "drift.min_distance": (lambda v: v >= 0, "must be >= 0"),
    "drift.threshold": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "tensorize.shard_size": (lambda v: v > 0, "must be > 0"),
    "tensorize.hop_bars": (lambda v: v > 0, "must be > 0"),
    "tensorize.workers": (lambda v: v >= 0, "must be >= 0 (0 = one per usable CPU)"),
    "train.epochs": (lambda v: v > 0, "must be > 0"),
    "train.batch_size": (lambda v: v > 0, "must be > 0"),
    "train.lr": (lambda v: v > 0, "must be > 0"),
    "train.nproc": (lambda v: v > 0, "must be > 0"),
    "train.lr_schedule": (lambda v: v in ("cosine", "constant"), "must be cosine or constant"),
    "train.device": (lambda v: v in ("auto", "cpu", "cuda"), "must be auto, cpu or cuda"),
    "train.precision": (lambda v: v in ("fp32", "bf16"), "must be fp32 or bf16"),
    "train.data_order": (lambda v: v in ("global", "shards"), "must be global or shards"),
    "train.warmup_steps": (lambda v: v >= 0, "must be >= 0"),
    "train.beta_max": (lambda v: v >= 0, "must be >= 0"),
    "train.free_nats": (lambda v: v >= 0, "must be >= 0"),
    "train.hold_pitch_weight": (lambda v: v >= 0, "must be >= 0"),
    "train.transpose": (lambda v: 0 <= v <= 12, "must be in 0..12 semitones"),
    "model.latent_dim": (lambda v: v > 0, "must be > 0"),
    "model.bar_latent_dim": (lambda v: v >= 0, "must be >= 0 (0 = no per-bar latent)"),
    "model.bar_prior": (lambda v: v in ("normal", "learned", "kde"), "must be normal, learned or kde"),
    "model.prior_components": (lambda v: v >= 0, "must be >= 0 (0 = z ~ N(0, I))"),
    "model.prior": (lambda v: v in ("mixture", "kde"), "must be mixture or kde"),
    "model.step_embedding": (lambda v: v >= 2, "must be >= 2 (the encoder halves it before flattening)"),
    "model.encoder_hidden": (lambda v: v > 0, "must be > 0"),
    "model.conductor_hidden": (lambda v: v > 0, "must be > 0"),
    "model.decoder_hidden": (lambda v: v > 0, "must be > 0"),
    "model.dropout": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "tensorize.train_fraction": (lambda v: 0 < v < 1, "must be in (0, 1)"),
    "tensorize.val_fraction": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "tensorize.min_split_phrases": (lambda v: v >= 0, "must be >= 0 (0 = no warning)"),
    "evaluate.n_samples": (lambda v: v > 0, "must be > 0"),
    "evaluate.n_generated": (lambda v: v >= 2, "must be >= 2 (diversity needs pairs)"),
    "evaluate.temperatures": (lambda v: v != "[]", "must list at least one temperature"),
    "evaluate.stat_rel_tolerance": (lambda v: v >= 0, "must be >= 0"),
    "evaluate.stat_abs_floor": (lambda v: v >= 0, "must be >= 0"),
    "evaluate.min_margin": (lambda v: -1 <= v < 1, "must be in [-1, 1) (-1 opens the gate)"),
    "evaluate.min_unique_fraction": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "evaluate.copy_match": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "evaluate.copy_alpha": (lambda v: 0 <= v < 1, "must be in [0, 1) (0: no copy test)"),
    "evaluate.fidelity_quantile": (lambda v: 0 <= v < 1, "must be in [0, 1) (0: no fidelity floor)"),
    "evaluate.bootstrap_resamples": (lambda v: v > 0, "must be > 0"),
    "evaluate.confidence": (lambda v: 0 < v < 1, "must be in (0, 1)"),
    "register.bootstrap_resamples": (lambda v: v > 0, "must be > 0"),
    "register.confidence": (lambda v: 0 < v < 1, "must be in (0, 1)"),
}


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read and validate a params file; `overrides` maps dotted keys to values (CLI --set)."""
    path = Path(path)
    raw = _read_mapping(path)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value, path)
    return params_from_dict(raw, source=str(path))


def params_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Params:
    params = _build(Params, raw, source, "")
    flat = params.flat()  # ranges first: the cross-key checks below divide by some of them
    for key, (ok, reason) in {**_CHECKS, **_INPUT_BOUNDS}.items():
        if not ok(flat[key]):
            raise ParamsError(f"{source}: {key}: {reason}, got {flat[key]!r}")
    refuse_credentials(params.data.source, f"{source}: data.source")
    if not params.tracks:
        raise ParamsError(f"{source}: tracks: at least one track is required")
    names = params.track_names
    for t in params.tracks:
        if t.kind not in TRACK_KINDS:
            raise ParamsError(f"{source}: tracks: {t.name}: kind must be one of "
                              f"{', '.join(TRACK_KINDS)}, got {t.kind!r}")
    if not all(math.isfinite(v) and v > 0 for v in params.evaluate.temperatures):
        raise ParamsError(f"{source}: evaluate.temperatures: must be > 0 and finite, "
                          f"got {list(params.evaluate.temperatures)}")
    unknown = sorted(set(params.evaluate.statistics) - set(STATISTICS))
    if unknown:
        raise ParamsError(f"{source}: evaluate.statistics: unknown statistic {unknown[0]!r} "
                          f"(known: {', '.join(STATISTICS)})")
    if len(set(names)) != len(names):
        raise ParamsError(f"{source}: tracks: names must be unique, got {names}")
    t = params.tensorize
    if t.train_fraction + t.val_fraction >= 1:
        raise ParamsError(
            f"{source}: tensorize.train_fraction + tensorize.val_fraction must be < 1 "
            f"(the test split gets the rest), got {t.train_fraction} + {t.val_fraction}"
        )
    if params.model.prior == "kde" and params.model.bar_prior != "normal":
        raise ParamsError(f"{source}: model.prior: kde draws the bars' z's too: model.bar_prior must be "
                          f"normal, got {params.model.bar_prior!r}")
    r = params.representation
    if r.lowest_pitch + r.n_pitches > 128:
        raise ParamsError(f"{source}: representation: lowest_pitch + n_pitches must be <= 128")
    if r.source_resolution % r.beat_resolution:
        raise ParamsError(
            f"{source}: representation.beat_resolution ({r.beat_resolution}) must divide "
            f"source_resolution ({r.source_resolution})"
        )
    return params


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: {where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(
            f"{source}: unknown key {prefix}{unknown[0]} (known keys at {where}: "
            f"{', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name in fields:
        if name not in raw:
            raise ParamsError(f"{source}: missing key {prefix}{name} (params.yaml lists every "
                              "key with a comment)")
        kwargs[name] = _coerce(hints[name], raw[name], source, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, source, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, key + ".")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{source}: {key}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{source}: {key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, source, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{source}: {key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{source}: {key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{source}: {key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{source}: {key}: expected a string, got {value!r}")
        return value
    raise ParamsError(f"{source}: {key}: unsupported type {tp}")  # pragma: no cover


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, path: Path) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ParamsError(f"{path}: cannot override {dotted}: {part} is not a mapping")
    node[parts[-1]] = value


def _read_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty: {}); every failure names the file."""
    try:
        raw = yaml.safe_load(read_small_text(path))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


MAX_PARAMS_FILE_BYTES = 1 << 20  # a params or profile file: the project's is ~10 KB


def read_small_text(path: Path, limit: int = MAX_PARAMS_FILE_BYTES) -> str:
    """A file named on the command line, read only when it is a regular UTF-8 file of at most
    `limit` bytes: `/dev/zero`, a FIFO or a folder would block, exhaust memory or traceback."""
    try:
        size = regular_file_size(path)
        if size > limit:
            raise ParamsError(f"{path}: larger than a params file may be ({size} bytes, limit {limit})")
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # the file may have grown since stat
    except NotRegularFile as exc:
        raise ParamsError(str(exc)) from None
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ParamsError(f"{path}: larger than a params file may be (limit {limit} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def profile_overrides(path: str | Path) -> dict[str, Any]:
    """A profile file (a partial params.yaml, e.g. profiles/full.yaml) as dotted overrides:
    params.yaml stays the one source of every key; a profile only changes values."""
    raw = _read_mapping(Path(path))
    if "tracks" in raw:
        check_profile_tracks(raw["tracks"], Path(path))
    out: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(raw, "")
    return out


def check_profile_tracks(tracks: Any, path: Path) -> None:
    """A profile's `tracks` replace params.yaml's whole list, so each entry is checked here,
    against the profile's own file: every key of a track (a kind above all: it picks the
    decoder's distribution and the statistics a track is gated on) and a known kind."""
    if not isinstance(tracks, list) or not tracks:
        raise ParamsError(f"{path}: tracks: expected a non-empty list of tracks, got {tracks!r}")
    for i, entry in enumerate(tracks):
        name = entry.get("name", "?") if isinstance(entry, dict) else "?"
        if isinstance(entry, dict) and "kind" not in entry:
            raise ParamsError(f"{path}: tracks[{i}] ({name}): missing key kind (one of "
                              f"{', '.join(TRACK_KINDS)})")
        spec = _build(TrackSpec, entry, str(path), f"tracks[{i}].")
        if spec.kind not in TRACK_KINDS:
            raise ParamsError(f"{path}: tracks[{i}] ({name}): kind must be one of "
                              f"{', '.join(TRACK_KINDS)}, got {spec.kind!r}")


def parse_override(text: str) -> tuple[str, Any]:
    """`key.sub=VALUE` from the command line; VALUE is parsed as YAML (so 3, 0.5, true, [1,2])."""
    if "=" not in text:
        raise ParamsError(f"--set {text!r}: expected KEY=VALUE")
    key, _, value = text.partition("=")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        reason = str(exc).splitlines()[0]
        raise ParamsError(f"--set {text!r}: the value is not valid YAML ({reason})") from None


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    return obj


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list | dict):
            out[key] = json.dumps(v, sort_keys=True)
        else:
            out[key] = v
    return out


# Hostile-input bounds (issue 24): the ints that a zero or negative value turns into a division
# by zero, an endless loop or a refused archive, and the seeds numpy and torch accept.
SEED_MAX = 2**32 - 1
_INPUT_BOUNDS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "data.max_file_bytes": (lambda v: v > 0, "must be > 0"),
    "data.max_archive_bytes": (lambda v: v > 0, "must be > 0"),
    "data.max_archive_members": (lambda v: v > 0, "must be > 0"),
    "data.max_archive_ratio": (lambda v: math.isfinite(v) and v >= 1, "must be a finite number >= 1"),
    "data.ingest_concurrency": (lambda v: v > 0, "must be > 0"),
    "validate.min_bars": (lambda v: v >= 0, "must be >= 0"),
    "validate.min_notes": (lambda v: v >= 0, "must be >= 0"),
    "validate.max_polyphony": (lambda v: v > 0, "must be > 0"),
    "tensorize.max_empty_bars": (lambda v: v >= 0, "must be >= 0"),
    "train.beta_warmup_steps": (lambda v: v >= 0, "must be >= 0"),
    "train.checkpoint_every_steps": (lambda v: v >= 0, "must be >= 0 (0 = none)"),
    "train.early_stopping_patience": (lambda v: v >= 0, "must be >= 0"),
    "train.num_workers": (lambda v: v >= 0, "must be >= 0"),
    "train.grad_clip": (lambda v: math.isfinite(v) and v >= 0, "must be finite and >= 0"),
    "train.weight_decay": (lambda v: math.isfinite(v) and v >= 0, "must be finite and >= 0"),
    **{f"{step}.seed": (lambda v: 0 <= v <= SEED_MAX, f"must be in 0..{SEED_MAX}")
       for step in ("train", "evaluate", "register")},
}


def refuse_credentials(uri: str, where: str) -> None:
    """Refuse a source URI that carries a secret: params are recorded in dvc.lock (committed),
    MLflow and KFP, so credentials come from the environment instead. Names the parts, never
    their values."""
    from lpdvae.data.redact import credential_parts, redact_uri

    parts = credential_parts(uri)
    if parts:
        raise ParamsError(
            f"{where}: {redact_uri(uri)!r} carries a credential ({', '.join(parts)}); params are recorded "
            "in dvc.lock, so keep secrets out of them: s3:// sources take their keys from "
            "LPDVAE_DATA_AWS_ACCESS_KEY_ID/LPDVAE_DATA_AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, a named "
            "~/.aws profile), http(s):// sources a ~/.netrc entry for the host (NETRC names another file)")
