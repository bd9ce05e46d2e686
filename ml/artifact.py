"""The versioned model artifact, written so that a reader never sees half of one.

    <model_dir>/<version>/          version = UTC time YYYYMMDDTHHMMSSZ, sortable
        model.keras                 the Keras model (scaling included)
        saved_model/                serving_default: windows [batch, W, F] float32 -> failure_probability [batch]
        metadata.json               window, horizon, features, scaling, threshold, schema, training, metrics, baseline,
                                    feature_stats (per feature: min, max, mean, std, quantiles of the training cars)
        training_sample.npy         up to 2000 raw training readings [n, F] (drift report; absent in old versions)
        report/                     the evaluation report (when training wrote one)

A version is written under a hidden temporary name in the same folder and renamed into place when complete.
The SavedModel signature (`INPUT_NAME` -> `OUTPUT_NAME`) is the contract between training, which exports it, and
every program that loads a version: it is defined here, once, for both sides.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import CarStreamError

log = logging.getLogger(__name__)

VERSION_FORMAT = "%Y%m%dT%H%M%SZ"
VERSION_PATTERN = re.compile(r"^\d{8}T\d{6}Z$")
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
METADATA_FILE = "metadata.json"
TRAINING_SAMPLE_FILE = "training_sample.npy"
REQUIRED_METADATA = ("window", "horizon", "features", "scaling", "threshold", "schema", "training", "metrics")
INPUT_NAME = "windows"
SIGNATURE_BATCH = 4096  # windows per signature call: bounds the memory of one call
OUTPUT_NAME = "failure_probability"


class ArtifactError(CarStreamError):
    """A model artifact is missing, incomplete or inconsistent."""


def new_version(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime(VERSION_FORMAT)


def _free_version(root: Path) -> str:
    """Now, or the next free second when a version of this second exists already."""
    moment = datetime.now(UTC).replace(microsecond=0)
    while (root / new_version(moment)).exists():
        moment += timedelta(seconds=1)
    return new_version(moment)


def save(
    model: Any,
    metadata: dict[str, Any],
    model_dir: str | Path,
    extras: Callable[[Path], None] | None = None,
) -> Path:
    """Write model.keras, saved_model/ and metadata.json as a new version; `extras(staging_dir)` may add files
    (the evaluation report) before the version becomes visible. Returns the version directory."""
    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    version = _free_version(root)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    try:
        window, n_features = int(metadata["window"]), len(metadata["features"])
        model.save(staging / KERAS_FILE)
        _export_saved_model(model, str(staging / SAVED_MODEL_DIR), window, n_features)
        full = {"version": version, **metadata}
        (staging / METADATA_FILE).write_text(json.dumps(full, indent=2, default=_json_default) + "\n")
        if extras is not None:
            extras(staging)
        target = root / version
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("model artifact saved: %s", target)
    return target


def _export_saved_model(model: Any, path: str, window: int, n_features: int) -> None:
    """A SavedModel whose `serving_default` takes `windows` [batch, W, F] float32 and returns
    `failure_probability` [batch] float32: what the predictor, TF Serving and other languages load."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(windows: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: tf.reshape(model(windows, training=False), [-1])}

    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[tf.TensorSpec([None, window, n_features], tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(path, verbose=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# A version named later than this ahead of the clock is ignored: it would sort after every version trained from
# now on and hide them all (a clock set wrong where it was made, or a name typed by hand).
MAX_CLOCK_AHEAD = timedelta(minutes=10)
_warned_future: set[Path] = set()


def versions(model_dir: str | Path, now: datetime | None = None) -> list[Path]:
    """Complete versions, oldest first (temporary folders start with a dot and never match). A version named in
    the future (beyond MAX_CLOCK_AHEAD) is left out, with one warning per folder."""
    root = Path(model_dir)
    if not root.is_dir():
        return []
    limit = (now or datetime.now(UTC)) + MAX_CLOCK_AHEAD
    found = []
    for path in root.iterdir():
        if not (path.is_dir() and VERSION_PATTERN.match(path.name)):
            continue
        try:
            made = datetime.strptime(path.name, VERSION_FORMAT).replace(tzinfo=UTC)
        except ValueError:  # matches the pattern but is no date (month 13)
            made = None
        if made is None or made > limit:
            if path not in _warned_future:
                _warned_future.add(path)
                log.warning("ignoring model version %s: its name is no time up to now; rename or remove it", path)
            continue
        found.append(path)
    return sorted(found)


def latest(model_dir: str | Path) -> Path | None:
    found = versions(model_dir)
    return found[-1] if found else None


class LoadedModel:
    """An artifact loaded for inference through its SavedModel signature (what other programs use too)."""

    def __init__(self, path: Path, metadata: dict[str, Any], signature: Any, keep_alive: Any) -> None:
        self.path = path
        self.metadata = metadata
        self._signature = signature
        self._keep_alive = keep_alive  # the loaded SavedModel object owns the signature's variables

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def window(self) -> int:
        return int(self.metadata["window"])

    @property
    def horizon(self) -> int:
        return int(self.metadata["horizon"])

    @property
    def features(self) -> list[str]:
        return list(self.metadata["features"])

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    def warm_up(self) -> float:
        """One call at the largest batch `predict` makes; returns its seconds. TensorFlow's first call of a
        signature, and the first at each larger size (its allocator grows), cost tens to hundreds of ms more than
        the next ones (measured: 4096 windows 200 to 330 ms, then 48): paid here, not by the first readings."""
        started = time.perf_counter()
        self.predict(np.zeros((SIGNATURE_BATCH, self.window, len(self.features)), dtype=np.float32))
        return time.perf_counter() - started

    def predict(self, windows: np.ndarray, batch_size: int = SIGNATURE_BATCH) -> np.ndarray:
        """Failure probabilities [batch] for raw windows [batch, W, F] in metadata's feature order."""
        import tensorflow as tf

        windows = np.asarray(windows, dtype=np.float32)
        expected = (self.window, len(self.features))
        if windows.ndim != 3 or windows.shape[1:] != expected:
            raise ArtifactError(f"windows must have shape [batch, {expected[0]}, {expected[1]}], got {windows.shape}")
        if len(windows) == 0:
            return np.zeros(0, dtype=np.float32)
        parts = [
            self._signature(**{INPUT_NAME: tf.constant(windows[i : i + batch_size])})[OUTPUT_NAME].numpy()
            for i in range(0, len(windows), batch_size)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def keras_model(self) -> Any:
        import keras

        return keras.models.load_model(self.path / KERAS_FILE)


def read_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        metadata = json.loads((path / METADATA_FILE).read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} is not a model artifact: no {METADATA_FILE}") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path / METADATA_FILE} is not valid JSON: {exc}") from exc
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ArtifactError(f"{path / METADATA_FILE} lacks {', '.join(missing)}")
    metadata.setdefault("version", path.name)
    return metadata


def write_training_sample(folder: Path, sample: np.ndarray) -> None:
    """Raw training readings [n, F] in metadata's feature order, for comparing recent data with them."""
    np.save(folder / TRAINING_SAMPLE_FILE, np.asarray(sample, dtype=np.float32), allow_pickle=False)


def read_training_sample(path: str | Path) -> np.ndarray | None:
    """The training sample of a version directory, or None for a version written before samples were kept."""
    file = Path(path) / TRAINING_SAMPLE_FILE
    return np.load(file, allow_pickle=False) if file.is_file() else None


def load(path: str | Path) -> LoadedModel:
    """Load a version directory (see `latest`) for inference."""
    import tensorflow as tf

    path = Path(path)
    metadata = read_metadata(path)
    if not (path / SAVED_MODEL_DIR).is_dir():
        raise ArtifactError(f"{path} lacks {SAVED_MODEL_DIR}/")
    loaded = tf.saved_model.load(str(path / SAVED_MODEL_DIR))
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ArtifactError(f"{path / SAVED_MODEL_DIR} has no serving_default signature")
    log.info("loaded model %s (window %s, horizon %s)", metadata["version"], metadata["window"], metadata["horizon"])
    return LoadedModel(path, metadata, signature, loaded)
