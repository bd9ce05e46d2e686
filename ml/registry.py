"""The model registry: which version is served (the champion), which waits to be judged (the challenger), and every
decision that moved them, kept in the model folder beside the versions (no server).

    <model_dir>/registry/
        aliases.json       {"champion": version | null, "challenger": version | null}: what the predictor reads.
                           Replaced whole (a temporary file in the same folder, fsynced, os.replace): a reader sees
                           the old aliases or the new ones, never half of them
        decisions.jsonl    one JSON decision per line, appended and fsynced: time (UTC), action (register, promote,
                           reject, rollback), version, previous_champion, reason, figures
        judgement.json     the judge's latest round that judged (`python -m ml judge`, ml/continual/judge.py): time
                           (UTC), the champion and challenger judged, the gate's verdict (wait, promote, reject), its
                           reason and figures (each model's live figures and the gate's H, W and rule, as a decision
                           of the judge keeps them). Replaced whole like aliases.json after every such round, for
                           others to read (the dashboard); no decision: decisions.jsonl alone is the history
        .lock              taken (fcntl.flock) around every read-modify-write: two writers never interleave

Rules (`Registry`):
- register_challenger(version): the version must be a complete version of the folder (ml/artifact.py) whose
  metadata reads, and not the champion. A pending challenger must be promoted or rejected first, so that every
  challenger ends in a decision.
- promote: the challenger becomes the champion; the challenger alias is cleared.
- reject: the challenger alias is cleared; the champion stays.
- promote and reject given `judged` (the version a program judged, `python -m ml judge`): refused when another
  challenger is pending by then, so that a verdict on one version never moves another registered meanwhile.
- rollback: the champion becomes the one before it on the line of promotions (a second rollback goes one more
  back; a rolled-back champion comes back only by being registered and promoted again). A pending challenger
  stays pending. With no champion before the current one: RegistryError.
- `previous_champion` of a decision is the version served before it: the champion, or, before the first
  promotion, the version `serving_version` gave (so rolling back the first promotion returns to it).

`serving_version(model_dir)`: the champion when the registry names one, else the newest complete version (what the
predictor served before the registry existed), the pending challenger excepted: a challenger is never served
before it is promoted. Register and promote the version in service once to adopt the registry; from then on a
newly trained version is served only when promoted. `in_service(model_dir)` gives it with the pending challenger,
from one read of the aliases: the predictor scores that challenger in the shadow (ml/serving/shadow.py). The Java
serving program restates this rule and the aliases' format (ml/streams/.../ModelRegistry.java): a change here is a
change there.

Edge cases:
- decisions.jsonl is the history and aliases.json its summary. A write works out the aliases from the history
  (never from aliases.json, which a crash can leave behind), appends its decision, then rewrites aliases.json: a
  crash between the two leaves aliases.json one decision behind until the next decision rewrites it. A hand-edited
  aliases.json is likewise put back to what the history says by the next decision.
- a torn last line of decisions.jsonl (a crash in the middle of an append) is ignored when read, with a warning,
  and cut off before the next append; a corrupt line anywhere else, or a corrupt aliases.json, is a RegistryError
  naming the file.
- a champion whose folder is gone is still named by serving_version: the predictor logs that it cannot load it
  and keeps serving the model it has.
- judgement.json may name versions that are no longer the champion and challenger (a decision came after it): a
  reader compares its versions with the aliases. A judgement.json that does not read is a RegistryError naming it.
- `recent(n)` reads the history's last n decisions from the end of decisions.jsonl (a reader that refreshes, the
  dashboard, never reads a long history whole); a torn last line is left out without a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from common.errors import CarStreamError
from ml import artifact

log = logging.getLogger(__name__)

REGISTRY_DIR = "registry"
ALIASES_FILE = "aliases.json"
DECISIONS_FILE = "decisions.jsonl"
JUDGEMENT_FILE = "judgement.json"
LOCK_FILE = ".lock"
REGISTER, PROMOTE, REJECT, ROLLBACK = "register", "promote", "reject", "rollback"
ACTIONS = (REGISTER, PROMOTE, REJECT, ROLLBACK)
Record = TypeVar("Record")
TAIL_CHUNK = 64 * 1024  # `recent` reads the history backwards in parts of this size


class RegistryError(CarStreamError):
    """A registry decision breaks a rule, or a registry file is corrupt."""


@dataclass(frozen=True)
class Aliases:
    champion: str | None = None
    challenger: str | None = None


@dataclass(frozen=True)
class Decision:
    time: str
    """UTC, ISO 8601 with a Z."""
    action: str
    version: str
    """The version the action is about: registered, promoted, rejected, or rolled back to."""
    previous_champion: str | None
    """The version served before the decision."""
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)  # NaN is no JSON other readers take


@dataclass(frozen=True)
class Judgement:
    """The judge's latest round that judged (judgement.json)."""

    time: str
    """UTC, ISO 8601 with a Z."""
    champion: str
    challenger: str
    """The versions judged: the aliases when the round began."""
    verdict: str
    """The gate's: wait, promote or reject (ml/gate.py)."""
    reason: str
    figures: dict[str, Any]
    """{"champion": ..., "challenger": ...: each model's LiveFigures.as_dict(); "gate": {horizon, window, rule}}."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _decision(line: str, where: str) -> Decision:
    try:
        values = json.loads(line)
        decision = Decision(**values)
    except (json.JSONDecodeError, TypeError) as exc:
        raise RegistryError(f"{where} is no registry decision: {exc}") from exc
    if decision.action not in ACTIONS or not isinstance(decision.version, str):
        what = f"action {decision.action!r}, version {decision.version!r}"
        raise RegistryError(f"{where} is no registry decision: {what}")
    return decision


def _fsync_folder(folder: Path) -> None:
    """A new or renamed file survives a crash only once its folder's entry is on disk too."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _read(path: Path, kind: type[Record], invalid: str, fix: str) -> Record | None:
    """The file's JSON object as a `kind`, or None where there is no such file; RegistryError naming it."""
    try:
        return kind(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path} {invalid} ({exc}); {fix}") from exc


def read_aliases(model_dir: str | Path) -> Aliases | None:
    """The aliases, or None where no registry exists (no aliases.json)."""
    path = Path(model_dir) / REGISTRY_DIR / ALIASES_FILE
    aliases = _read(
        path, Aliases, "is not valid registry aliases", f"the next decision rewrites it from {DECISIONS_FILE}"
    )
    for name in (aliases.champion, aliases.challenger) if aliases else ():
        if name is not None and not (isinstance(name, str) and artifact.VERSION_PATTERN.match(name)):
            raise RegistryError(f"{path} names {name!r}, which is no model version")
    return aliases


def read_judgement(model_dir: str | Path) -> Judgement | None:
    """The judge's latest judgement, or None where it has written none."""
    path = Path(model_dir) / REGISTRY_DIR / JUDGEMENT_FILE
    judgement = _read(path, Judgement, "is no judgement of the judge", "the judge's next round rewrites it")
    if judgement is not None and not (isinstance(judgement.figures, dict) and isinstance(judgement.verdict, str)):
        raise RegistryError(f"{path} is no judgement of the judge: verdict {judgement.verdict!r}, figures not a map")
    return judgement


def _newest_but(model_dir: Path, challenger: str | None) -> Path | None:
    found = [path for path in artifact.versions(model_dir) if path.name != challenger]
    return found[-1] if found else None


@dataclass(frozen=True)
class InService:
    """What a predictor runs, from one read of the aliases: the version it serves and the challenger it scores in
    the shadow (None: no such version)."""

    serving: Path | None
    challenger: Path | None


def in_service(model_dir: str | Path) -> InService:
    """The version to serve (`serving_version`) and the pending challenger, from the same aliases: a promotion is
    seen as both at once, never as a champion that is still the challenger."""
    root = Path(model_dir)
    aliases = read_aliases(root)
    challenger = aliases.challenger if aliases else None
    if aliases is not None and aliases.champion is not None:
        serving: Path | None = root / aliases.champion
    else:
        serving = _newest_but(root, challenger)
    return InService(serving, root / challenger if challenger else None)


def serving_version(model_dir: str | Path) -> Path | None:
    """The version to serve: the champion alias, else the newest complete version that is not the challenger."""
    return in_service(model_dir).serving


@dataclass
class _Line:
    """The aliases a history leads to, and the line of champions that rollbacks walk back (current one last)."""

    champions: list[str] = field(default_factory=list)
    challenger: str | None = None

    @property
    def champion(self) -> str | None:
        return self.champions[-1] if self.champions else None

    def follow(self, decision: Decision) -> None:
        if decision.action == REGISTER:
            self.challenger = decision.version
        elif decision.action == PROMOTE:
            if not self.champions and decision.previous_champion:
                self.champions.append(decision.previous_champion)
            self.champions.append(decision.version)
            self.challenger = None
        elif decision.action == REJECT:
            self.challenger = None
        else:  # rollback: back one champion, or to the version named where the line does not lead there
            if self.champions:
                self.champions.pop()
            if self.champion != decision.version:
                self.champions = [decision.version]


class Registry:
    """The aliases and decision history of one model folder; see the module's docstring for the rules."""

    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)
        self.folder = self.model_dir / REGISTRY_DIR
        self.aliases_file = self.folder / ALIASES_FILE
        self.decisions_file = self.folder / DECISIONS_FILE
        self.judgement_file = self.folder / JUDGEMENT_FILE

    def aliases(self) -> Aliases:
        return read_aliases(self.model_dir) or Aliases()

    def champion(self) -> str | None:
        return self.aliases().champion

    def challenger(self) -> str | None:
        return self.aliases().challenger

    def history(self) -> list[Decision]:
        """Every decision, oldest first."""
        return self._read_history()[0]

    def recent(self, count: int) -> list[Decision]:
        """The last `count` decisions, oldest first, read from the end of the file: a long history is not read."""
        try:
            with open(self.decisions_file, "rb") as file:
                start = file.seek(0, os.SEEK_END)
                data = b""
                while start > 0 and data.count(b"\n") <= count:  # more newlines than lines wanted: enough whole ones
                    step = min(TAIL_CHUNK, start)
                    start -= step
                    file.seek(start)
                    data = file.read(step) + data
        except FileNotFoundError:
            return []
        lines = data[: data.rfind(b"\n") + 1].splitlines()  # a torn last line left out
        if start > 0:
            lines = lines[1:]  # the first may begin before the part read
        found = [(back, raw) for back, raw in enumerate(reversed(lines), start=1) if raw.strip()][:count]
        return [
            _decision(raw.decode("utf-8", errors="replace"), f"{self.decisions_file} line {back} from the end")
            for back, raw in reversed(found)
        ]

    def write_judgement(
        self, champion: str, challenger: str, verdict: str, reason: str, figures: dict[str, Any]
    ) -> Judgement:
        """Replace judgement.json with this round's; RegistryError when the figures are no JSON values."""
        judgement = Judgement(_now(), champion, challenger, verdict, reason, dict(figures))
        try:
            text = json.dumps(asdict(judgement), indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"the figures of a judgement must be JSON values: {exc}") from exc
        self.folder.mkdir(parents=True, exist_ok=True)
        self._replace(self.judgement_file, text)
        return judgement

    def register_challenger(self, version: str, reason: str, figures: dict[str, Any] | None = None) -> Decision:
        with self._locked() as line:
            self._require_version(version)
            if version == line.champion:
                raise RegistryError(f"{version} is the champion already")
            if version == line.challenger:
                raise RegistryError(f"{version} is the challenger already")
            if line.challenger is not None:
                raise RegistryError(
                    f"challenger {line.challenger} is pending: promote or reject it before registering {version}"
                )
            return self._decide(line, REGISTER, version, line.champion, reason, figures)

    def promote(self, reason: str, figures: dict[str, Any] | None = None, *, judged: str | None = None) -> Decision:
        """`judged`: the version a program judged; RegistryError when another one is pending now."""
        with self._locked() as line:
            challenger = self._pending(line, PROMOTE, judged)
            self._require_version(challenger)
            served = line.champion or self._served_before_registry(challenger)
            return self._decide(line, PROMOTE, challenger, served, reason, figures)

    def reject(self, reason: str, figures: dict[str, Any] | None = None, *, judged: str | None = None) -> Decision:
        """`judged`: as in `promote`."""
        with self._locked() as line:
            challenger = self._pending(line, REJECT, judged)
            return self._decide(line, REJECT, challenger, line.champion, reason, figures)

    def rollback(self, reason: str, figures: dict[str, Any] | None = None) -> Decision:
        with self._locked() as line:
            if len(line.champions) < 2:
                current = line.champion or "none"
                raise RegistryError(
                    f"no champion before the current one ({current}) in {self.decisions_file}: nothing to roll back to"
                )
            target = line.champions[-2]
            self._require_version(target)
            return self._decide(line, ROLLBACK, target, line.champion, reason, figures)

    def _served_before_registry(self, challenger: str) -> str | None:
        newest = _newest_but(self.model_dir, challenger)
        return newest.name if newest else None

    def _pending(self, line: _Line, action: str, judged: str | None = None) -> str:
        if line.challenger is None:
            raise RegistryError(f"no challenger to {action}: register one first")
        if judged is not None and judged != line.challenger:
            # the aliases changed between the judging and the decision: a verdict on one version never moves another
            raise RegistryError(
                f"{judged} was judged, but the pending challenger is now {line.challenger}: no {action}"
            )
        return line.challenger

    def _require_version(self, version: str) -> None:
        if version not in {path.name for path in artifact.versions(self.model_dir)}:
            raise RegistryError(f"{version} is no complete model version in {self.model_dir}")
        artifact.read_metadata(self.model_dir / version)  # ArtifactError when its metadata is missing or broken

    def _decide(
        self, line: _Line, action: str, version: str, previous: str | None, reason: str, figures: dict | None
    ) -> Decision:
        decision = Decision(_now(), action, version, previous, reason, dict(figures or {}))
        try:
            text = decision.to_json()
        except (TypeError, ValueError) as exc:
            raise RegistryError(f"the figures of a decision must be JSON values: {exc}") from exc
        self._append(text)
        line.follow(decision)
        self._write_aliases(Aliases(line.champion, line.challenger))
        log.info("registry of %s: %s %s (%s)", self.model_dir, action, version, reason)
        return decision

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Line]:
        """Hold the lock file; yields the line the history leads to."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            line = _Line()
            for decision in self.history():
                line.follow(decision)
            yield line

    def _read_history(self) -> tuple[list[Decision], int]:
        """The decisions, and the length in bytes of the file's whole lines (a torn last line excluded)."""
        try:
            data = self.decisions_file.read_bytes()
        except FileNotFoundError:
            return [], 0
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            log.warning("%s ends in a torn line (a write cut short), ignored: %r", self.decisions_file, data[whole:])
        decisions = []
        for number, raw in enumerate(data[:whole].splitlines(), start=1):
            if raw.strip():
                where = f"{self.decisions_file} line {number}"
                decisions.append(_decision(raw.decode("utf-8", errors="replace"), where))
        return decisions, whole

    def _append(self, text: str) -> None:
        whole = self._read_history()[1]
        created = not self.decisions_file.exists()
        with open(self.decisions_file, "ab") as out:
            if out.tell() > whole:
                out.truncate(whole)  # append mode writes at the end, wherever that now is
            out.write(text.encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        if created:
            _fsync_folder(self.folder)

    def _write_aliases(self, aliases: Aliases) -> None:
        self._replace(self.aliases_file, json.dumps(asdict(aliases), indent=2))

    def _replace(self, path: Path, text: str) -> None:
        """Replace `path` whole with `text`: a reader sees the old file or the new one, never half of either."""
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=self.folder)
        try:
            os.fchmod(handle, 0o644)  # mkstemp's 0600 would hide the file from a reader run as another user
            with os.fdopen(handle, "w") as out:
                out.write(text + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        _fsync_folder(self.folder)
