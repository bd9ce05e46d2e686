"""The promotion gate: whether a challenger model replaces the champion, judged on live failure episodes.

Continual training trains challengers; the champion's predictions are the product. A challenger that looks better
on its validation split may still warn fewer of the failures that really happen: the split is old data, its
threshold was chosen there, and PR-AUC over windows rewards ranking, not warning a failure in time. So the gate
judges both models live (ml/live_eval.py: episodes, warned, false alerts per healthy car-hour, PR-AUC over
matured readings, as ml/episodes.py defines them), on the SAME readings (those both predicted: `head_to_head`),
and decides:

1. WAIT until both were judged on at least `min_episodes` matured failure episodes. Fewer episodes say little: one
   episode more or less warned is then noise, and a challenger is better not promoted on luck.
2. PROMOTE when all three hold, else REJECT, the reason naming each condition that failed:
   - warned: the challenger warned at least as many episodes as the champion. Warning real failures is the
     product; no gain elsewhere buys a missed failure.
   - false alerts: its false alerts per healthy car-hour are at most the champion's plus `false_alert_margin`,
     or, when it warned MORE episodes than the champion, at most `false_alert_budget` (the operator's budget,
     training's ML_FALSE_ALARM_BUDGET). An operator woken for nothing stops listening: as many failures warned
     for more false alerts is worse. But a champion quieter than the budget (its threshold, chosen for the budget
     on validation cars, measured 0.02 per healthy car-hour on 200 unseen cars: ml/README.md) must not hold every
     challenger that warns more failures to a rate below what the operator accepts.
   - PR-AUC: at least the champion's minus `pr_auc_margin`. The ranking behind the alerts must not have fallen
     apart (the next threshold is chosen on it); the margin lets a challenger that warns as well through with a
     ranking that differs by noise.
   A figure that cannot be computed yet (PR-AUC with one class, no healthy car-hour judged) means WAIT.

The rule's settings are `GateRule`'s: fields, ML_GATE_* environment variables, the defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import StackSettings
from ml.live_eval import LiveFigures

Verdict = Literal["wait", "promote", "reject"]


class GateRule(StackSettings):
    """The promotion rule's settings: ML_GATE_MIN_EPISODES, ML_GATE_PR_AUC_MARGIN, ML_GATE_FALSE_ALERT_MARGIN."""

    model_config = SettingsConfigDict(env_prefix="ML_GATE_", frozen=True, populate_by_name=True, extra="ignore")

    min_episodes: int = Field(
        10, ge=1, description="Matured failure episodes both models must be judged on before any verdict but wait"
    )
    pr_auc_margin: float = Field(
        0.02, ge=0, description="How far the challenger's live PR-AUC may fall below the champion's"
    )
    false_alert_margin: float = Field(
        0.0,
        ge=0,
        description="How many more false alerts per healthy car-hour than the champion's the challenger may raise",
    )
    false_alert_budget: float = Field(
        0.1,
        ge=0,
        description="False alerts per healthy car-hour a challenger that warns MORE episodes than the champion may "
        "raise even above the champion's (the operator's budget, as training's ML_FALSE_ALARM_BUDGET)",
    )


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    """What was decided and why, quoting the figures."""
    figures: dict[str, dict[str, Any]]
    """{"champion": ..., "challenger": ...}: each model's LiveFigures.as_dict(), JSON-ready."""


def _number(value: float) -> str:
    return f"{value:.4g}"


def _failed_conditions(champion: LiveFigures, challenger: LiveFigures, rule: GateRule) -> list[str]:
    """What the challenger fails, each with its figures; empty when it passes. Both rates and PR-AUCs are known."""
    failed = []
    if challenger.warned < champion.warned:
        failed.append(
            f"warned fewer episodes ({challenger.warned} of {challenger.episodes} against the champion's "
            f"{champion.warned})"
        )
    ours, theirs = challenger.false_alerts_per_car_hour, champion.false_alerts_per_car_hour
    within_budget = challenger.warned > champion.warned and ours <= rule.false_alert_budget
    if ours > theirs + rule.false_alert_margin and not within_budget:
        budget = f", budget {_number(rule.false_alert_budget)} when warning more" if ours > theirs else ""
        failed.append(
            f"more false alerts ({_number(ours)} per healthy car-hour against the champion's {_number(theirs)}, "
            f"margin {_number(rule.false_alert_margin)}{budget})"
        )
    if challenger.pr_auc < champion.pr_auc - rule.pr_auc_margin:
        failed.append(
            f"lower PR-AUC ({_number(challenger.pr_auc)} against the champion's {_number(champion.pr_auc)}, "
            f"margin {_number(rule.pr_auc_margin)})"
        )
    return failed


def _summary(champion: LiveFigures, challenger: LiveFigures) -> str:
    def line(figures: LiveFigures) -> str:
        rate = figures.false_alerts_per_car_hour
        return (
            f"{figures.model_version}: warned {figures.warned}, false alerts per healthy car-hour "
            f"{'n/a' if rate is None else _number(rate)}, "
            f"PR-AUC {'n/a' if figures.pr_auc is None else _number(figures.pr_auc)}"
        )

    return (
        f"{champion.episodes} episodes, {champion.matured_readings} matured readings; champion {line(champion)}; "
        f"challenger {line(challenger)}"
    )


def decide(champion: LiveFigures, challenger: LiveFigures, rule: GateRule | None = None) -> Decision:
    """The gate's verdict on figures of the same readings (`ml.live_eval.head_to_head`; ValueError otherwise)."""
    rule = rule or GateRule()
    if (champion.matured_readings, champion.episodes) != (challenger.matured_readings, challenger.episodes):
        raise ValueError(
            f"champion {champion.model_version} and challenger {challenger.model_version} were not judged on the "
            f"same readings ({champion.matured_readings} and {challenger.matured_readings} matured readings, "
            f"{champion.episodes} and {challenger.episodes} episodes): use ml.live_eval.head_to_head"
        )
    figures = {"champion": champion.as_dict(), "challenger": challenger.as_dict()}
    summary = _summary(champion, challenger)
    if champion.episodes < rule.min_episodes:
        reason = f"wait: {champion.episodes} matured failure episodes judged, {rule.min_episodes} needed; {summary}"
        return Decision("wait", reason, figures)
    unknown = sorted(
        {
            name
            for model in (champion, challenger)
            for name, value in (("false alert rate", model.false_alerts_per_car_hour), ("PR-AUC", model.pr_auc))
            if value is None
        }
    )
    if unknown:
        return Decision("wait", f"wait: {' and '.join(unknown)} not known yet; {summary}", figures)
    failed = _failed_conditions(champion, challenger, rule)
    if failed:
        reason = f"reject {challenger.model_version}, {champion.model_version} stays: {'; '.join(failed)}; {summary}"
        return Decision("reject", reason, figures)
    reason = f"promote {challenger.model_version} over {champion.model_version}: {summary}"
    return Decision("promote", reason, figures)
