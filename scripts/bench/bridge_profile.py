"""Where the bridge's time goes: drain a backlog through an in-process Bridge under cProfile (thread CPU time) and
group the functions by the library they belong to.

cProfile adds a cost per Python call, so code made of many small Python calls (paho) looks larger than it is; the
shares say where to look, the bench's `cpu_us_per_msg` (measured without a profiler) says how much it costs.
"""

from __future__ import annotations

import cProfile
import pstats
import threading
import time
import uuid
from collections import Counter

from bridge.app import Bridge
from bridge.settings import BridgeSettings
from common.topics import MQTT_TOPIC_FILTER
from scripts.bench.context import BenchContext

GROUPS = (  # first match wins: (group, substrings of the profiler's file name or function name)
    ("socket_syscalls", ("_socket.socket", "select.select")),
    ("paho_mqtt", ("/paho/", "bridge/paho_client.py")),  # the bridge's lean paho client is MQTT work too
    ("json", ("/json/",)),
    ("avro_encode", ("common/avro.py", "fastavro")),
    ("kafka_client", ("cimpl.",)),
    ("prometheus", ("/prometheus_client/",)),
    ("bridge_code", ("/bridge/",)),
)


def group_of(filename: str, function: str) -> str:
    where = f"{filename}:{function}"
    return next((name for name, needles in GROUPS if any(n in where for n in needles)), "other")


def profile_drain(ctx: BenchContext, messages: list[tuple[str, bytes]]) -> dict[str, float]:
    from scripts.bench.bridge import create_session, publish

    client_id = f"bench-profile-{uuid.uuid4().hex[:6]}"
    group = f"profile-{uuid.uuid4().hex[:6]}"
    create_session(ctx.mqtt_port, client_id, f"$share/{group}/{MQTT_TOPIC_FILTER}")
    publish(ctx.mqtt_port, messages)
    settings = BridgeSettings(
        kafka_bootstrap_servers=ctx.bootstrap,
        kafka_security=ctx.kafka_security,
        mqtt_port=ctx.mqtt_port,
        client_id=client_id,
        shared_group=group,
        kafka_topic=f"bench-profile-{group}",
        dlq_topic=f"bench-profile-dlq-{group}",
        metrics_port=0,
        log_interval=3600,
    )
    bridge = Bridge(settings)
    bridge.wait_for_topics()

    def stop_when_done() -> None:
        while bridge.stats.produced < len(messages) and not bridge.stop_requested.is_set():
            time.sleep(0.05)
        bridge.stop_requested.set()

    threading.Thread(target=stop_when_done, daemon=True).start()
    profiler = cProfile.Profile(time.thread_time)
    profiler.runcall(bridge.run)
    shares: Counter[str] = Counter()
    for (filename, _line, function), (_cc, _nc, tottime, _ct, callers) in pstats.Stats(profiler).stats.items():
        group = group_of(filename, function)
        if group == "other" and filename == "~":
            # A builtin (len, hasattr, str.replace ...): its time belongs to whoever called it.
            for (caller_file, _l, caller_function), (*_counts, caller_tottime, _cumtime) in callers.items():
                shares[group_of(caller_file, caller_function)] += caller_tottime
        else:
            shares[group] += tottime
    total = sum(shares.values())
    result = {f"cpu_share_{name}_pct": round(100 * seconds / total, 1) for name, seconds in shares.most_common()}
    result["profiled_cpu_us_per_msg"] = round(total / len(messages) * 1e6, 1)
    return result
