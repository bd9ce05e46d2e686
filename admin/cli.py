"""`python -m admin apply`: the secured mode's Kafka set-up, as the `admin` identity: the services' users (SCRAM),
the topics and the ACLs of admin/policy.py. Idempotent; returns once the broker lists every ACL.

The compose stack's secured `topics` one-shot and the Kubernetes Job `admin` run it from the services' image; the
local runtime calls the same code at a secured start. admin's identity comes from the environment (its env file:
KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_CA_LOCATION), the services' passwords from --users-file. See
SECURITY.md.
"""

from __future__ import annotations

import argparse
import logging

from admin.kafka_rules import apply_kafka_rules
from admin.settings import NOT_ADMIN_SETTINGS, AdminSettings
from common.cli import add_settings_arguments, describe, doc_parser, settings_from_args
from common.logs import setup_logging

log = logging.getLogger("admin")


def build_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m admin", __doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    apply = commands.add_parser(
        "apply",
        help="the services' Kafka users, the topics and the ACLs (idempotent)",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(apply, AdminSettings, exclude=NOT_ADMIN_SETTINGS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    settings = settings_from_args(AdminSettings, args)
    log.info("settings: %s", describe(settings))
    apply_kafka_rules(
        settings.kafka_bootstrap_servers,
        settings.kafka_security,
        settings.passwords(),
        settings.topic_partitions(),
        settings.timeout,
    )
    return 0
