"""One exception root for the stack, with thin subclasses per area."""


class CarStreamError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(CarStreamError):
    """A setting or command-line option is invalid."""


class DecodeError(CarStreamError):
    """Bytes could not be decoded into a record (unknown framing, unknown schema, corrupt body)."""


class RegistryUnavailable(CarStreamError):
    """The schema registry did not answer (connection refused, timeout, a 5xx): not bad data; wait and retry."""


class ValidationError(CarStreamError):
    """A payload was decoded but does not describe a valid reading."""


class KafkaError(CarStreamError):
    """A Kafka operation failed; carries librdkafka's error code and description."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DependencyMissingError(CarStreamError):
    """A program the local runtime needs (Java, Maven, Mosquitto) is not installed."""


class LocalRuntimeError(CarStreamError):
    """The local runtime could not start or stop a server."""
