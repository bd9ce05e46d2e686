"""The judge: the promotion gate (ml/gate.py) applied to live data, round after round, and its verdicts carried out
in the registry (ml/registry.py).

Every `judge_interval` seconds, once the feed (feed.py) has read the backlog it found at the start, a round:
1. the registry's champion and challenger; without both there is nothing to judge (logged). The lookback forgets
   the product predictions of every version but the champion's and the shadow predictions of every version but
   the challenger's: a model no longer in the registry's two roles is never judged again;
2. the champion's horizon H and window W from its metadata (ml/artifact.py): one H and W judge both models;
3. `ml.live_eval.head_to_head` on the lookback's readings, the champion's predictions of the product topic and the
   challenger's of the shadow topic, then `ml.gate.decide` with the GateRule (ML_GATE_* variables); the verdict,
   its reason and figures, logged every round and written to the registry's judgement.json (ml/registry.py);
4. "promote": `Registry.promote`, "reject": `Registry.reject`, each only if the challenger judged is still the one
   pending (another decision may have come meanwhile, by hand); the decision goes to decisions.jsonl (the registry
   writes it) and then to the decisions topic (ml/decisions_topic.py; a record Kafka does not confirm is logged,
   the file holds it). The lookback then forgets the shadow predictions: the next challenger starts from none.
   "wait" changes nothing.

A round that cannot be judged (a registry file or the champion's metadata does not read) is logged as an error and
the next round tries again: a file fixed by hand needs no restart.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ml import artifact
from ml.continual.feed import Feed
from ml.continual.history import History
from ml.continual.lookback import PRODUCT, SHADOW, Lookback
from ml.continual.settings import ContinualSettings, JudgeSettings
from ml.continual.trainer import Retrainer
from ml.decisions_topic import publish_decision
from ml.gate import GateRule, Verdict, decide
from ml.live_eval import head_to_head
from ml.registry import Decision, Registry, RegistryError

log = logging.getLogger(__name__)


class Judge:
    """One round at a time (`round()`), on `lookback`, deciding in `registry`; `publish` hears every decision
    made (the decisions topic), after the registry wrote it."""

    def __init__(
        self,
        registry: Registry,
        lookback: Lookback,
        rule: GateRule,
        publish: Callable[[Decision], object] = lambda decision: None,
    ) -> None:
        self.registry = registry
        self.lookback = lookback
        self.rule = rule
        self.publish = publish

    def round(self) -> Verdict | None:
        """Judge the lookback once; the verdict, or None when there was nothing to judge."""
        aliases = self.registry.aliases()
        champion, challenger = aliases.champion, aliases.challenger
        self.lookback.keep_only(product=champion, shadow=challenger)
        if champion is None or challenger is None:
            missing = " and ".join(name for name, v in (("champion", champion), ("challenger", challenger)) if not v)
            log.info("nothing to judge: the registry of %s names no %s", self.registry.model_dir, missing)
            return None
        metadata = artifact.read_metadata(self.registry.model_dir / champion)
        horizon, window = int(metadata["horizon"]), int(metadata["window"])
        if self.lookback.per_car <= horizon:
            log.warning(
                "a lookback of %d readings per car holds no matured reading at the champion's horizon H=%d: raise "
                "ML_LOOKBACK_READINGS", self.lookback.per_car, horizon,
            )  # fmt: skip
        readings = self.lookback.readings()
        ours = self.lookback.predictions(PRODUCT, champion)
        theirs = self.lookback.predictions(SHADOW, challenger)
        counts = f"{len(readings)} readings, {len(ours)} predictions of {champion}, {len(theirs)} of {challenger}"
        if not (readings and ours and theirs):
            log.info("wait: %s in the lookback; champion %s, challenger %s", counts, champion, challenger)
            return "wait"
        verdict = decide(*head_to_head(readings, ours, theirs, horizon, window), self.rule)
        log.info("%s (H=%d, W=%d; lookback: %s)", verdict.reason, horizon, window, counts)
        figures: dict[str, Any] = {
            **verdict.figures,
            "gate": {"horizon": horizon, "window": window, "rule": self.rule.model_dump()},
        }
        try:  # for others to read (the dashboard); the verdict stands without it
            self.registry.write_judgement(champion, challenger, verdict.verdict, verdict.reason, figures)
        except (OSError, RegistryError) as exc:
            log.error("this round's judgement is not written to %s: %s", self.registry.judgement_file, exc)
        if verdict.verdict == "wait":
            return "wait"
        act = self.registry.promote if verdict.verdict == "promote" else self.registry.reject
        try:
            decision = act(verdict.reason, figures, judged=challenger)
        except RegistryError as exc:
            log.warning("the verdict on %s is not carried out: %s", challenger, exc)
            return None
        forgotten = self.lookback.forget(SHADOW)
        log.info("%s %s: %d shadow predictions forgotten", decision.action, decision.version, forgotten)
        self.publish(decision)
        return verdict.verdict


def run_judge(settings: JudgeSettings, stop: threading.Event) -> None:
    """Read the topics and judge every `settings.judge_interval` seconds until `stop` is set."""
    _run(settings, stop)


def run_continual(settings: ContinualSettings, stop: threading.Event) -> None:
    """The judge's loop, with the continual trainer (ml/continual/trainer.py) fed by the same reading of the
    readings topic and checked on each turn once the backlog is read."""
    history = History(
        settings.history_readings, settings.history_cars, settings.lookback_idle_seconds, settings.drift_readings
    )
    log.info(
        "continual training: history %d readings per car of %d cars; retrain on drift >= %.0f%% of %d readings, "
        ">= %d new failure episodes, every %.0f s (0: never), at most every %.0f s; warm start %s",
        settings.history_readings, settings.history_cars, settings.retrain_drift_share * 100, settings.drift_readings,
        settings.retrain_episodes, settings.retrain_period, settings.retrain_min_interval, settings.warm_start,
    )  # fmt: skip
    _run(settings, stop, lambda registry, publish: Retrainer(settings, registry, history, publish), history.add)


def _run(
    settings: JudgeSettings,
    stop: threading.Event,
    retrainer: Callable[[Registry, Callable[[Decision], object]], Retrainer] | None = None,
    on_reading: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    rule = GateRule()
    registry = Registry(settings.model_dir)
    publish = functools.partial(
        publish_decision,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        security=settings.kafka_security,
        topic=settings.decisions_topic,
        timeout=settings.decisions_timeout,
        history_file=registry.decisions_file,
    )
    lookback = Lookback(settings.lookback_readings, settings.lookback_cars, settings.lookback_idle_seconds)
    judge = Judge(registry, lookback, rule, publish)
    trainer = retrainer(registry, publish) if retrainer else None
    feed = Feed(settings, lookback, stop, on_reading)
    log.info(
        "judging %s (product) against %s (shadow) on %s every %.0f s, lookback %d readings per car of %d cars "
        "(idle after %.0f s), from %.0f s back; gate %s; model folder %s",
        settings.predictions_topic, settings.shadow_topic, settings.topic, settings.judge_interval,
        settings.lookback_readings, settings.lookback_cars, settings.lookback_idle_seconds,
        settings.lookback_seconds, rule.model_dump(), settings.model_dir,
    )  # fmt: skip
    next_round = time.monotonic() + settings.judge_interval
    try:
        while not stop.is_set():
            feed.poll()
            if trainer is not None and feed.caught_up and not stop.is_set():
                try:
                    trainer.check()
                except (RegistryError, artifact.ArtifactError) as exc:
                    log.error("retraining not checked: %s", exc)
            if time.monotonic() < next_round or stop.is_set():
                continue
            next_round = time.monotonic() + settings.judge_interval
            if not feed.caught_up:
                log.info("no round yet: still reading the topics' backlog (%s)", lookback.counts())
                continue
            try:
                judge.round()
            except (RegistryError, artifact.ArtifactError) as exc:
                log.error("round not judged: %s; next round in %.0f s", exc, settings.judge_interval)
            if lookback.evicted_cars or lookback.ignored:
                log.info(
                    "lookback: %s; %d idle cars forgotten, %d records of cars beyond the cap ignored so far",
                    lookback.counts(), lookback.evicted_cars, lookback.ignored,
                )  # fmt: skip
    finally:
        feed.close()
        if trainer is not None and trainer.training:
            log.info("the training under way is abandoned (its version is never registered)")
        log.info("stopped")
