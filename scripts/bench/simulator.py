"""The `simulator` section: 100,000 cars at one reading per 10 s each (10,000 msg/s) sustained for 60 s (10 s with
--quick) from one process into the run's Mosquitto, at QoS 0 and QoS 1, beside the ceiling measured in the same
run: a bare paho publish loop (one client, a pre-encoded reading, 1,000 topics, as fast as it goes).

Keys: msgs_per_s, baseline_msgs_per_s, peak_rss_mb, cpu_percent (QoS 1, the stack's default), and the same per
QoS (qos0_*, qos1_*); threaded_baseline_* is paho's usual loop_start idiom, which the simulator does not use.
qos{0,1}_cpu_ratio_to_baseline is the simulator's CPU per message over the bare loop's, same run: what the
simulator adds to paho (simulating, encoding, pacing). The bare loop does less than the simulator must, so the
paced_baseline_* figures run it under the simulator's conditions (10,000 msg/s in 5 ms ticks over 100,000 topics)
and qos{0,1}_cpu_ratio_to_paced_baseline compares with that; the bare loop stays the ceiling. encode_us_per_reading
and step_us_per_car are this process's cost of the JSON payloads (simulator/payload.py) and of the fleet's physics
(simulator/fleet.py), the two things the simulator does per message that no bare loop does.

Also runnable as `python -m scripts.bench.simulator baseline --port P --qos Q --seconds S [--threaded]
[--rate MSG_PER_S --topics N]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from scripts.bench.context import BenchContext, ProcessSampler, python_module
from scripts.runtime.local import ROOT
from simulator.fleet import Fleet
from simulator.live import TICK_S
from simulator.payload import encode_step

log = logging.getLogger(__name__)

CARS = 100_000
RATE = 0.1  # readings per second per car: one per 10 s
WINDOW = 10_000  # messages in flight, as the simulator's default
PAYLOAD = (
    b'{"car_id":"car-00001","seq":0,"event_time":1704067200000,"coolant_temp":82.12,"intake_air_temp":10.63,'
    b'"intake_air_flow_speed":77.61,"battery_percentage":53.11,"battery_voltage":11.91,"current_draw":72.03,'
    b'"speed":64.83,"engine_vibration_amplitude":752.08,"throttle_pos":0.271,"tire_pressure_1_1":38,'
    b'"tire_pressure_1_2":37,"tire_pressure_2_1":37,"tire_pressure_2_2":37,"accelerometer_1_1_value":0.255,'
    b'"accelerometer_1_2_value":0.002,"accelerometer_2_1_value":0.321,"accelerometer_2_2_value":-0.794,'
    b'"control_unit_firmware":1000,"failure_occurred":false}'
)


def run(ctx: BenchContext) -> dict:
    seconds = 10 if ctx.quick else 60
    baseline_seconds = 5 if ctx.quick else 15
    figures: dict = {"cars": CARS, "target_msgs_per_s": CARS * RATE, "seconds": seconds}
    figures.update(_encode_and_step_cost())
    for qos in (0, 1):
        prefix = f"qos{qos}_"
        for name, extra in _BASELINES.items():
            command = _baseline_command(ctx, qos, baseline_seconds, *extra)
            base = _measure(ctx, command, timeout=baseline_seconds + 60)
            figures[f"{prefix}{name}_msgs_per_s"] = base["msgs_per_s"]
            figures[f"{prefix}{name}_cpu_percent"] = base["cpu_percent"]
            figures[f"{prefix}{name}_cpu_us_per_msg"] = base["cpu_us_per_msg"]
        sim = _measure(ctx, _simulator_command(qos, seconds), timeout=seconds + 120)
        figures[f"{prefix}msgs_per_s"] = sim["msgs_per_s"]
        figures[f"{prefix}published"] = sim["published"]
        figures[f"{prefix}acknowledged"] = sim["acknowledged"]
        figures[f"{prefix}drain_s"] = round(sim["seconds"] - seconds, 1)  # after the deadline, for acks
        figures[f"{prefix}cpu_percent"] = sim["cpu_percent"]
        figures[f"{prefix}cpu_us_per_msg"] = sim["cpu_us_per_msg"]
        figures[f"{prefix}peak_rss_mb"] = sim["peak_rss_mb"]
        for name in ("baseline", "paced_baseline"):
            ratio = sim["cpu_us_per_msg"] / figures[f"{prefix}{name}_cpu_us_per_msg"]
            figures[f"{prefix}cpu_ratio_to_{name}"] = round(ratio, 2)
        log.info("simulator qos %d: %s", qos, {k: v for k, v in figures.items() if k.startswith(prefix)})
    figures.update(
        msgs_per_s=figures["qos1_msgs_per_s"],
        baseline_msgs_per_s=figures["qos1_baseline_msgs_per_s"],
        peak_rss_mb=max(figures["qos0_peak_rss_mb"], figures["qos1_peak_rss_mb"]),
        cpu_percent=figures["qos1_cpu_percent"],
    )
    return figures


# Baseline variants: name -> extra arguments of `baseline`.
_BASELINES = {
    "baseline": [],
    "threaded_baseline": ["--threaded"],
    "paced_baseline": ["--rate", str(CARS * RATE), "--topics", str(CARS)],
}


def _encode_and_step_cost() -> dict:
    """CPU of the simulator's own per-message work, in this process: one fleet step, its readings encoded."""
    fleet = Fleet(CARS)
    started = time.process_time()
    step = fleet.step()
    step_s = time.process_time() - started
    started = time.process_time()
    batch = int(CARS * RATE * TICK_S)  # readings in one tick of the live loop
    for first in range(0, CARS, batch):
        encode_step(step, fleet.car_ids, first, first + batch)
    encode_s = time.process_time() - started
    return {"step_us_per_car": round(step_s / CARS * 1e6, 2), "encode_us_per_reading": round(encode_s / CARS * 1e6, 2)}


def _simulator_command(qos: int, seconds: int) -> list[str]:
    return python_module(
        "simulator", "--cars", str(CARS), "--rate", str(RATE), "--duration", str(seconds), "--qos", str(qos),
        "--no-progress",
    )  # fmt: skip


def _baseline_command(ctx: BenchContext, qos: int, seconds: int, *extra: str) -> list[str]:
    args = ["baseline", "--port", str(ctx.mqtt_port), "--qos", str(qos), "--seconds", str(seconds)]
    return python_module("scripts.bench.simulator", *args, *extra)


def _measure(ctx: BenchContext, command: list[str], timeout: float) -> dict:
    """Run a child process that writes a JSON summary to --summary-file; add its CPU and peak RSS."""
    with tempfile.TemporaryDirectory(dir=ctx.work_dir) as tmp:
        summary_file = Path(tmp) / "summary.json"
        process = subprocess.Popen(
            [*command, "--summary-file", str(summary_file)], env=ctx.env(), cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        sampler = ProcessSampler(process.pid)
        try:
            _, stderr = process.communicate(timeout=timeout)
        finally:
            usage = sampler.stop()
            if process.poll() is None:
                process.kill()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command[1:4])} failed ({process.returncode}): {stderr[-2000:]}")
        return json.loads(summary_file.read_text()) | usage


def bare_publish_loop(
    port: int, qos: int, seconds: float, threaded: bool, rate: float | None = None, topic_count: int = 1000
) -> dict:
    """Publish one pre-encoded reading as fast as paho goes for `seconds`, at most WINDOW unacknowledged, on
    `topic_count` topics in turn. Unthreaded (the simulator's way): publish writes to the socket, loop_read takes
    the acknowledgements in. Threaded: paho's loop_start idiom, its network thread reading and writing.
    `rate` (unthreaded only): paced as the simulator paces, every reading due by then sent once a tick late."""
    if rate is not None and threaded:
        raise ValueError("a paced baseline is unthreaded")
    done = 0
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-baseline-{qos}-{int(threaded)}")
    client.max_inflight_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()

    def on_publish(*_: object) -> None:
        nonlocal done
        done += 1

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    if threaded:
        client.loop_start()
    while not connected.is_set():
        client.loop_read() if not threaded else connected.wait(0.1)
    topics = [f"vehicles/sensor/data/car-{car:05d}" for car in range(1, topic_count + 1)]
    sent = 0
    started, cpu_started = time.monotonic(), time.process_time()
    end = started + seconds
    while (now := time.monotonic()) < end:
        burst = topics
        if rate is not None:
            late = now - (started + sent / rate)
            if late < TICK_S:
                client.loop_read()
                time.sleep(TICK_S - late)
                continue
            due = int((now - started) * rate) + 1
            burst = [topics[i % topic_count] for i in range(sent, due)]
        for topic in burst:
            while sent - done >= WINDOW:
                client.loop_read() if not threaded else time.sleep(0.0005)
            client.publish(topic, PAYLOAD, qos=qos)
            sent += 1
            if not threaded and sent % 256 == 0:
                client.loop_read()
    while done < sent and time.monotonic() < end + 30:
        client.loop_read() if not threaded else time.sleep(0.01)
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_started
    client.disconnect()
    if threaded:
        client.loop_stop()
    return {
        "published": sent,
        "acknowledged": done,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(sent / elapsed, 1),
        "cpu_us_per_msg": round(cpu / sent * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.simulator", description=bare_publish_loop.__doc__)
    parser.add_argument("mode", choices=["baseline"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qos", type=int, choices=[0, 1], default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threaded", action="store_true")
    parser.add_argument("--rate", type=float, help="messages per second, paced in ticks (default: as fast as it goes)")
    parser.add_argument("--topics", type=int, default=1000, help="topics published to in turn")
    parser.add_argument("--summary-file", type=Path, required=True)
    args = parser.parse_args()
    figures = bare_publish_loop(args.port, args.qos, args.seconds, args.threaded, args.rate, args.topics)
    args.summary_file.write_text(json.dumps(figures))


if __name__ == "__main__":
    main()
