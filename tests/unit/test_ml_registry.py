"""The model registry (ml/registry.py) and its command (ml/registry_cli.py): aliases and history in the model
folder, the rules of promote, reject and rollback, clear errors, and the version the predictor serves."""

import json
import socket
import threading
from pathlib import Path

import pytest

from ml import artifact
from ml import registry as registry_module
from ml.registry import Registry, RegistryError, read_judgement, serving_version
from ml.registry_cli import main as registry_main
from scripts.testkit.registry import metadata_version

A, B, C = "20240101T000000Z", "20240102T000000Z", "20240103T000000Z"


def version(model_dir: Path, name: str) -> Path:
    return metadata_version(model_dir, name)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    for name in (A, B, C):
        version(tmp_path, name)
    return tmp_path


def promoted(registry: Registry, name: str, reason: str = "better") -> None:
    registry.register_challenger(name, "trained")
    registry.promote(reason)


def test_aliases_and_history_round_trip_through_the_files(models):
    registry = Registry(models)
    assert (registry.champion(), registry.challenger(), registry.history()) == (None, None, [])
    registry.register_challenger(A, "first model", {"pr_auc": 0.61})
    assert (registry.champion(), registry.challenger()) == (None, A)
    registry.promote("beats nothing", {"pr_auc": 0.61, "episodes": 12})
    registry.register_challenger(B, "retrained")

    again = Registry(models)  # what another process reads
    assert (again.champion(), again.challenger()) == (A, B)
    assert json.loads((models / "registry" / "aliases.json").read_text()) == {"champion": A, "challenger": B}
    history = again.history()
    assert [(d.action, d.version, d.reason) for d in history] == [
        ("register", A, "first model"),
        ("promote", A, "beats nothing"),
        ("register", B, "retrained"),
    ]
    assert history[1].figures == {"pr_auc": 0.61, "episodes": 12}
    # before the first promotion the newest version other than the challenger was served: C
    assert [d.previous_champion for d in history] == [None, C, A]
    lines = (models / "registry" / "decisions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [json.loads(d.to_json()) for d in history]
    assert history[0].time.endswith("Z") and history[0].time <= history[2].time


def test_promote_and_reject_rules(models):
    registry = Registry(models)
    with pytest.raises(RegistryError, match="no challenger to promote"):
        registry.promote("why not")
    with pytest.raises(RegistryError, match="no challenger to reject"):
        registry.reject("why not")
    promoted(registry, A)
    with pytest.raises(RegistryError, match="is the champion already"):
        registry.register_challenger(A, "again")
    registry.register_challenger(B, "retrained")
    with pytest.raises(RegistryError, match="is the challenger already"):
        registry.register_challenger(B, "twice")
    with pytest.raises(RegistryError, match=f"challenger {B} is pending"):
        registry.register_challenger(C, "another")
    registry.reject("worse on the test cars", {"pr_auc": 0.4})
    assert (registry.champion(), registry.challenger()) == (A, None)
    registry.register_challenger(C, "retrained again")
    with pytest.raises(RegistryError, match="JSON values"):
        registry.promote("numbers", {"pr_auc": float("nan")})
    registry.promote("better")
    assert (registry.champion(), registry.challenger()) == (C, None)
    assert [d.action for d in registry.history()] == [
        "register",
        "promote",
        "register",
        "reject",
        "register",
        "promote",
    ]


def test_rollback_walks_back_the_line_of_promotions(models):
    registry = Registry(models)
    promoted(registry, A)
    promoted(registry, B)
    promoted(registry, C)
    registry.register_challenger(A, "a pending challenger stays pending")
    decision = registry.rollback("C alerts too often")
    assert (decision.version, decision.previous_champion) == (B, C)
    assert (registry.champion(), registry.challenger()) == (B, A)
    registry.reject("no")
    assert registry.rollback("B too").version == A  # two rollbacks: two promotions back, never back to C
    assert registry.champion() == A
    # the first promotion's champion before was the newest version served then: C
    assert registry.rollback("A too").version == C
    with pytest.raises(RegistryError, match="no champion before the current one"):
        registry.rollback("once more")


def test_rollback_without_a_previous_champion_is_a_clear_error(tmp_path):
    with pytest.raises(RegistryError, match=r"no champion before the current one \(none\)"):
        Registry(tmp_path).rollback("nothing yet")
    version(tmp_path, A)
    promoted(Registry(tmp_path), A)  # the only version: nothing was served before it
    with pytest.raises(RegistryError, match=rf"no champion before the current one \({A}\).*decisions.jsonl"):
        Registry(tmp_path).rollback("nothing before")
    assert Registry(tmp_path).champion() == A


def test_unknown_broken_or_vanished_versions_are_clear_errors(models, tmp_path):
    registry = Registry(models)
    with pytest.raises(RegistryError, match=f"20990101T000000Z is no complete model version in {models}"):
        registry.register_challenger("20990101T000000Z", "from the future")
    with pytest.raises(RegistryError, match="nonsense is no complete model version"):
        registry.register_challenger("nonsense", "typo")
    (models / "20240104T000000Z").mkdir()  # no metadata.json
    with pytest.raises(artifact.ArtifactError, match="no metadata.json"):
        registry.register_challenger("20240104T000000Z", "broken")
    assert registry.history() == []
    promoted(registry, A)
    promoted(registry, B)
    (models / A / artifact.METADATA_FILE).unlink()
    with pytest.raises(artifact.ArtifactError, match=f"{A} is not a model artifact"):
        registry.rollback("A is gone")
    assert registry.champion() == B


def test_a_corrupt_aliases_file_is_a_clear_error_naming_it_and_the_next_decision_rewrites_it(models):
    registry = Registry(models)
    promoted(registry, A)
    aliases = models / "registry" / "aliases.json"
    aliases.write_text('{"champion": "2024')
    for read in (registry.champion, lambda: serving_version(models)):
        with pytest.raises(RegistryError, match=f"{aliases} is not valid registry aliases"):
            read()
    aliases.write_text(json.dumps({"champion": "../elsewhere", "challenger": None}))
    with pytest.raises(RegistryError, match=f"{aliases} names '../elsewhere', which is no model version"):
        serving_version(models)
    registry.register_challenger(B, "the history knows the champion")
    assert (registry.champion(), registry.challenger()) == (A, B)


def test_a_corrupt_history_line_is_a_clear_error_and_a_torn_last_line_is_cut_off(models):
    registry = Registry(models)
    promoted(registry, A)
    history = models / "registry" / "decisions.jsonl"
    whole = history.read_bytes()
    history.write_bytes(whole + b'{"time": "2024-01-0')  # an append cut short by a crash
    assert [d.action for d in registry.history()] == ["register", "promote"]
    registry.register_challenger(B, "after the crash")
    assert [json.loads(line)["action"] for line in history.read_text().splitlines()] == [
        "register",
        "promote",
        "register",
    ]

    history.write_bytes(whole + b'{"action": "promote"}\n' + whole)
    with pytest.raises(RegistryError, match=f"{history} line 3 is no registry decision"):
        registry.history()
    with pytest.raises(RegistryError, match="line 3"):
        registry.reject("cannot decide on a history it cannot read")


def test_serving_version_is_the_champion_else_the_newest_but_never_the_challenger(tmp_path):
    assert serving_version(tmp_path / "missing") is None
    assert serving_version(tmp_path) is None
    for name in (A, B):
        version(tmp_path, name)
    assert serving_version(tmp_path) == tmp_path / B  # no registry: today's newest version
    registry = Registry(tmp_path)
    promoted(registry, A)
    version(tmp_path, C)  # trained after: newer, not served
    assert serving_version(tmp_path) == tmp_path / A
    registry.register_challenger(C, "waits")
    assert serving_version(tmp_path) == tmp_path / A
    registry.promote("better")
    assert serving_version(tmp_path) == tmp_path / C
    registry.rollback("worse live")
    assert serving_version(tmp_path) == tmp_path / A

    other = tmp_path / "other"
    for name in (A, B):
        version(other, name)
    Registry(other).register_challenger(B, "no champion named yet")
    assert serving_version(other) == other / A  # a challenger is never served before it is promoted


def test_concurrent_writers_never_interleave(models):
    """Each writer registers its own challenger and rejects it; without the lock two writers read "no challenger"
    at once and both register, which the history would show."""
    failures: list[BaseException] = []

    def write(name: str) -> None:
        registry = Registry(models)
        try:
            for _ in range(10):
                while True:
                    try:
                        registry.register_challenger(name, "mine")
                        break
                    except RegistryError as exc:
                        assert "is pending" in str(exc)
                registry.reject("done")
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    Registry(models).history()
    threads = [threading.Thread(target=write, args=(name,)) for name in (A, B, C)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    actions = [(d.action, d.version) for d in Registry(models).history()]
    assert len(actions) == 60
    for registered, rejected in zip(actions[::2], actions[1::2], strict=True):
        assert (registered[0], rejected) == ("register", ("reject", registered[1]))


def test_the_command_decides_shows_and_exits_1_when_kafka_does_not_confirm(models, capsys, monkeypatch):
    monkeypatch.setenv("ML_MODEL_DIR", str(models))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert registry_main(["register", A, "--reason", "first"]) == 0
    assert registry_main(["promote"]) == 0
    with pytest.raises(RegistryError, match="no challenger to promote"):  # run_main: `error: ...`, exit 2
        registry_main(["promote"])
    assert registry_main(["show"]) == 0
    shown = capsys.readouterr().out
    assert (
        f"champion:     {A}" in shown and "challenger:   none" in shown and f"served:       {A} (the champion)" in shown
    )
    assert "decisions (2, oldest first)" in shown and "first" in shown

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    given = ["--kafka-bootstrap-servers", f"127.0.0.1:{port}", "--decisions-timeout", "1"]
    assert registry_main(["register", B, *given]) == 1
    assert Registry(models).challenger() == B, "the file is the source of truth: written before Kafka"
    assert Registry(models).history()[-1].version == B


def test_a_verdict_on_one_challenger_never_moves_another_registered_meanwhile(models):
    registry = Registry(models)
    promoted(registry, A)
    registry.register_challenger(B, "retrained")
    registry.reject("by hand")  # while a program judged B, someone rejected it and registered C
    registry.register_challenger(C, "another")
    for decide in (registry.promote, registry.reject):
        with pytest.raises(RegistryError, match=f"{B} was judged, but the pending challenger is now {C}"):
            decide("the gate", judged=B)
    assert (registry.champion(), registry.challenger()) == (A, C)
    assert registry.history()[-1].action == "register"
    assert registry.promote("the gate", judged=C).version == C


def test_recent_reads_the_last_decisions_from_the_end_of_a_long_history(models, monkeypatch):
    monkeypatch.setattr(registry_module, "TAIL_CHUNK", 100)  # a decision line is longer: parts that cut lines
    registry = Registry(models)
    assert registry.recent(5) == []
    for _ in range(6):
        registry.register_challenger(B, "retrained " + "x" * 150)
        registry.reject("worse")
    history = registry.history()
    assert registry.recent(3) == history[-3:]
    assert registry.recent(50) == history
    decisions = models / "registry" / "decisions.jsonl"
    decisions.write_bytes(decisions.read_bytes() + b'{"time": "2024-01-0')  # torn by a crash: left out
    assert registry.recent(2) == history[-2:]
    lines = decisions.read_bytes().splitlines(keepends=True)[:-1]
    decisions.write_bytes(b"".join([*lines[:-2], b"not json\n", lines[-1]]))  # the second to last corrupt
    with pytest.raises(RegistryError, match=f"{decisions} line 2 from the end is no registry decision"):
        registry.recent(2)
    assert registry.recent(1) == history[-1:]  # the corrupt line lies before the part asked for


def test_the_judgement_is_replaced_whole_and_read_back_and_a_corrupt_one_is_a_clear_error(models):
    registry = Registry(models)
    assert read_judgement(models) is None
    figures = {"champion": {"warned": 3, "pr_auc": None}, "challenger": {"warned": 4, "pr_auc": 0.7}, "gate": {}}
    first = registry.write_judgement(A, B, "wait", "wait: 3 matured failure episodes judged", figures)
    second = registry.write_judgement(A, B, "promote", f"promote {B} over {A}", figures)
    assert read_judgement(models) == second != first
    path = models / "registry" / "judgement.json"
    assert json.loads(path.read_text())["verdict"] == "promote" and second.time.endswith("Z")
    assert sorted(p.name for p in path.parent.iterdir()) == ["judgement.json"], "no temporary left"
    assert path.stat().st_mode & 0o777 == 0o644  # readable by a dashboard run as another user
    assert (registry.champion(), registry.history()) == (None, []), "a judgement is no decision"
    with pytest.raises(RegistryError, match="JSON values"):
        registry.write_judgement(A, B, "wait", "a NaN", {"champion": {"pr_auc": float("nan")}})
    assert read_judgement(models) == second
    path.write_text('{"time": "2024')
    with pytest.raises(RegistryError, match=f"{path} is no judgement of the judge"):
        read_judgement(models)
