"""As `admin`: the services' Kafka users (SCRAM), the topics and the ACLs of admin/policy.py. Idempotent: run at
every secured start (the local runtime's, the compose stack's `topics`, the Kubernetes Job `admin`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from admin.policy import KAFKA_ACLS, KAFKA_SERVICE_USERS
from common.errors import ConfigError, KafkaError
from common.kafka import client_config, ensure_topics
from common.settings import KafkaSecurity

log = logging.getLogger(__name__)

SCRAM_ITERATIONS = 8192
KINDS = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "transactional_id": ResourceType.TRANSACTIONAL_ID}
OPERATIONS = {
    "read": AclOperation.READ,
    "write": AclOperation.WRITE,
    "describe": AclOperation.DESCRIBE,
    "create": AclOperation.CREATE,
}


def acl_bindings() -> list[AclBinding]:
    """KAFKA_ACLS as Kafka's bindings: each grant an ALLOW for `User:<service>` from any host."""
    return [
        AclBinding(
            KINDS[grant.resource],
            grant.name,
            ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
            f"User:{identity}",
            "*",
            OPERATIONS[grant.operation],
            AclPermissionType.ALLOW,
        )
        for identity, grants in KAFKA_ACLS.items()
        for grant in grants
    ]


def _done(future: Future, what: str, security: KafkaSecurity) -> Any:
    """The future's result; Kafka's refusal as a KafkaError that says who was refused what."""
    try:
        return future.result()
    except KafkaException as exc:
        error = exc.args[0]
        who = security.sasl_username or security.security_protocol
        raise KafkaError(f"{what} as {who} failed: {error.str()} (it needs the admin identity)", error.code()) from exc


def apply_kafka_rules(
    bootstrap: str,
    security: KafkaSecurity,
    passwords: Mapping[str, str],
    topics: Mapping[str, int],
    timeout: float = 30.0,
) -> None:
    """As `security` (admin's identity): each service user with its password from `passwords`, the topics with
    their partitions, and the ACLs. Returns once the broker lists every ACL."""
    missing = [user for user in KAFKA_SERVICE_USERS if not passwords.get(user)]
    if missing:
        raise ConfigError(f"no Kafka password for {', '.join(missing)}: every service user needs one")
    admin = AdminClient(client_config(bootstrap, security))
    upserts = [
        UserScramCredentialUpsertion(
            user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), passwords[user].encode()
        )
        for user in KAFKA_SERVICE_USERS
    ]
    for user, future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout).items():
        _done(future, f"setting the SCRAM credentials of {user}", security)
        log.debug("SCRAM credentials of %s set", user)
    ensure_topics(bootstrap, security, dict(topics), timeout)
    bindings = acl_bindings()
    for future in admin.create_acls(bindings, request_timeout=timeout).values():
        _done(future, "creating the ACLs", security)
    # The broker applies new ACLs a moment after create_acls returns; a service started at once would be refused
    # its first call: return once the broker lists them all.
    everything = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
    )
    deadline = time.monotonic() + timeout

    def listed() -> set[AclBinding]:
        return set(_done(admin.describe_acls(everything, request_timeout=timeout), "listing the ACLs", security))

    while not set(bindings) <= listed():
        if time.monotonic() > deadline:
            raise KafkaError(f"the broker does not list the ACLs {timeout:.0f} s after they were created")
        time.sleep(0.1)
    users = ", ".join(KAFKA_SERVICE_USERS)
    log.info("Kafka: users %s, topics %s and %d ACLs in place", users, ", ".join(topics), len(bindings))
