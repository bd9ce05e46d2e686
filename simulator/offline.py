"""`python -m simulator offline`: the same readings as the live mode, written to a file instead of MQTT.

CSV (header: the reading fields in schema order, failure_occurred as true/false, failure_mode empty when none;
`replay` reads it back) or JSON lines (one MQTT payload per line). The file appears complete or not at all: it is
written under a temporary name and renamed into place.
"""

from __future__ import annotations

import csv
import logging
import math

from common.errors import ConfigError
from common.schemas import SENSOR_FIELDS, payload_fields
from simulator.failures import reported_modes
from simulator.fleet import Fleet
from simulator.payload import encode_step
from simulator.settings import OfflineFormat, OfflineSettings

log = logging.getLogger(__name__)


def planned_readings(settings: OfflineSettings) -> int:
    limits = []
    if settings.count is not None:
        limits.append(settings.count)
    if settings.duration is not None:
        limits.append(settings.cars * math.ceil(settings.duration * settings.rate))
    if not limits:
        raise ConfigError("give --count or --duration: an offline run must end")
    return min(limits)


def write_offline(settings: OfflineSettings) -> int:
    """Write the readings to settings.out; returns how many were written."""
    total = planned_readings(settings)
    file_format = settings.resolved_format
    config = settings.fleet_config(settings.start_time)
    fleet = Fleet(settings.cars, settings.seed, config)
    partial = settings.out.with_name(settings.out.name + ".partial")
    written = failures = 0
    try:
        with partial.open("w", newline="" if file_format is OfflineFormat.CSV else None) as handle:
            csv_out = csv.writer(handle) if file_format is OfflineFormat.CSV else None
            if csv_out is not None:
                csv_out.writerow(payload_fields())
            while written < total:
                step = fleet.step()
                stop = min(fleet.cars, total - written)
                if csv_out is not None:
                    columns = [step.values[name][:stop].tolist() for name in SENSOR_FIELDS]
                    labels = ["true" if failed else "false" for failed in step.failure[:stop].tolist()]
                    modes = [mode or "" for mode in reported_modes(step.mode[:stop], step.failure[:stop])]
                    times = step.event_time_ms[:stop].tolist()
                    seqs = [step.seq] * stop
                    csv_out.writerows(zip(fleet.car_ids[:stop], seqs, times, *columns, labels, modes, strict=True))
                else:
                    handle.writelines(payload.decode() + "\n" for payload in encode_step(step, fleet.car_ids, 0, stop))
                written += stop
                failures += int(step.new_failure[:stop].sum())
        partial.replace(settings.out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {settings.out}: {exc.strerror}") from None
    log.info(
        "wrote %d readings of %d cars (%d failure episodes, %s) to %s",
        written,
        settings.cars,
        failures,
        file_format,
        settings.out,
    )
    return written
