"""`python -m ml registry`: show the model registry of the model folder, or decide: register a challenger, promote
it, reject it, or roll the champion back (ml/registry.py has the rules).

The predictor serves the champion alias (else the newest version) and switches within its reload interval, without
a restart. Every decision is appended to <model dir>/registry/decisions.jsonl, the source of truth. When Kafka is
given (--kafka-bootstrap-servers, KAFKA_BOOTSTRAP_SERVERS), the decision is also produced to the decisions topic
(--decisions-topic, default car-sensor-model-decisions; one partition, so the records keep the decisions' order;
created when missing): key = the decision's version, value = the decision's JSON in UTF-8. A decision Kafka did
not confirm is logged as an error and the command exits 1; the file holds it already.

Exit codes: 0 done; 1 the decision is in the file but not on Kafka; 2 a decision the rules refuse, or bad settings.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pydantic import Field

from common.cli import add_settings_arguments, describe, doc_parser, settings_from_args
from common.lifecycle import EXIT_FAILED, EXIT_OK
from common.logs import setup_logging
from common.settings import env_alias
from common.topics import MODEL_DECISIONS_TOPIC
from ml.decisions_topic import publish_decision
from ml.registry import PROMOTE, REGISTER, REJECT, ROLLBACK, Decision, Registry, serving_version
from ml.settings import MlSettings

log = logging.getLogger(__name__)

SHOW = "show"
BY_HAND = "by hand (python -m ml registry)"
# The readings' settings mean nothing to the registry.
NOT_REGISTRY_SETTINGS = ("reader", "topic", "schema_registry_url")


class RegistrySettings(MlSettings):
    """`python -m ml registry`: the model folder, and where decisions go besides its files."""

    kafka_bootstrap_servers: str | None = Field(
        None,
        validation_alias=env_alias("kafka_bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers, host:port[,host:port]; unset: decisions go to the registry's files only",
    )
    decisions_topic: str = Field(MODEL_DECISIONS_TOPIC, description="Kafka topic of the model decisions")
    decisions_timeout: float = Field(30.0, gt=0, description="Seconds Kafka has to confirm a decision")


def build_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m ml registry", __doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    helps = {
        SHOW: "the aliases, the version served and the decision history",
        REGISTER: "register VERSION as the challenger (not served until promoted)",
        PROMOTE: "the challenger becomes the champion, which the predictor serves",
        REJECT: "drop the challenger; the champion stays",
        ROLLBACK: "the champion before the current one becomes the champion again",
    }
    for action, text in helps.items():
        sub = actions.add_parser(action, help=text, description=text)
        if action == REGISTER:
            sub.add_argument("version", help="a version folder's name in the model folder (YYYYMMDDTHHMMSSZ)")
        if action != SHOW:
            sub.add_argument("--reason", default=BY_HAND, help=f"why, for the history (default: {BY_HAND})")
        add_settings_arguments(sub, RegistrySettings, exclude=NOT_REGISTRY_SETTINGS)
    return parser


def describe_registry(registry: Registry) -> str:
    """The aliases, the version served and the history, for a person."""
    aliases = registry.aliases()
    served = serving_version(registry.model_dir)
    why = "the champion" if aliases.champion else "the newest version; no champion named"
    lines = [
        f"model folder: {registry.model_dir}",
        f"champion:     {aliases.champion or 'none'}",
        f"challenger:   {aliases.challenger or 'none'}",
        f"served:       {served.name if served else 'nothing (no model version)'}" + (f" ({why})" if served else ""),
    ]
    history = registry.history()
    lines.append(f"decisions ({len(history)}, oldest first):" if history else "decisions: none yet")
    lines.extend("  " + describe_decision(decision) for decision in history)
    return "\n".join(lines)


def describe_decision(decision: Decision) -> str:
    text = f"{decision.time}  {decision.action:<8}  {decision.version}  (champion before: "
    text += f"{decision.previous_champion or 'none'})  {decision.reason}"
    return text + (f"  {json.dumps(decision.figures, sort_keys=True)}" if decision.figures else "")


def decide(registry: Registry, args: argparse.Namespace) -> Decision:
    if args.action == REGISTER:
        return registry.register_challenger(args.version, args.reason)
    if args.action == PROMOTE:
        return registry.promote(args.reason)
    if args.action == REJECT:
        return registry.reject(args.reason)
    return registry.rollback(args.reason)


def publish(decision: Decision, settings: RegistrySettings, history_file: Path) -> bool:
    """Produce `decision` (already in `history_file`) to the decisions topic; True once Kafka confirmed it (a
    failure is logged)."""
    servers = settings.kafka_bootstrap_servers or ""
    return publish_decision(
        decision, servers, settings.kafka_security, settings.decisions_topic, settings.decisions_timeout, history_file
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    settings = settings_from_args(RegistrySettings, args)
    log.debug("settings: %s", describe(settings))
    registry = Registry(settings.model_dir)
    if args.action == SHOW:
        print(describe_registry(registry))
        return EXIT_OK
    decision = decide(registry, args)
    print(describe_decision(decision))
    if settings.kafka_bootstrap_servers and not publish(decision, settings, registry.decisions_file):
        return EXIT_FAILED
    return EXIT_OK
