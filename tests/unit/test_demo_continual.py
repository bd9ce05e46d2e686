"""make demo CONTINUAL=1's registry steps (scripts/demo/continual.py) on real model folders: the trained model
becomes the champion whatever an earlier run left, and the view and summary follow the decisions that come after."""

from pathlib import Path

from ml.registry import Registry
from scripts.demo import continual
from scripts.testkit.registry import metadata_version


def version(model_dir: Path, name: str) -> str:
    return metadata_version(model_dir, name).name


def test_the_demos_model_becomes_the_champion_and_a_challenger_left_pending_is_rejected(tmp_path):
    old, pending, trained = (version(tmp_path, f"2024010{n}T000000Z") for n in (1, 2, 3))
    registry = Registry(tmp_path)
    registry.register_challenger(old, "an earlier run")
    registry.promote("an earlier run")
    registry.register_challenger(pending, "an earlier run's retraining")
    continual.make_champion(tmp_path, trained)
    assert (registry.champion(), registry.challenger()) == (trained, None)
    assert [d.action for d in registry.history()[-3:]] == ["reject", "register", "promote"]


def test_the_view_and_the_summary_follow_the_decisions_after_the_demos_own(tmp_path):
    champion, challenger = version(tmp_path, "20240101T000000Z"), version(tmp_path, "20240102T000000Z")
    continual.make_champion(tmp_path, champion)
    before = len(continual.decisions_after(tmp_path, 0))
    assert continual.decisions_after(tmp_path, before) == []
    assert continual.describe([]).startswith("continual: waiting for a retraining trigger")
    registry = Registry(tmp_path)
    registry.register_challenger(challenger, "period: 63 s since the last training")
    made = continual.decisions_after(tmp_path, before)
    assert not continual.decided(made)
    shadow = f"continual: challenger {challenger} in the shadow (period: 63 s since the last training)"
    assert continual.describe(made) == shadow
    registry.reject("reject: warned fewer episodes")
    made = continual.decisions_after(tmp_path, before)
    assert continual.decided(made) and continual.describe(made) == f"continual: reject {challenger}"
