"""make demo: the whole pipeline in one command, with a live view and a summary at the end.

    python -m scripts.demo [--cars 25] [--duration 120] [--runtime local|compose|external] [--serving python|java]
                           [--train-workers N] [--continual]

1. Start the infrastructure: Kafka and Mosquitto as local processes (the default, as for `make up`), or the compose
   stack when asked (`--runtime compose`: then the services below run in containers of the services' image too).
2. Start the bridge; a history fleet (300 cars x 300 readings) publishes through MQTT -> bridge -> car-sensor.
3. `python -m ml train` (on N worker processes with `--train-workers N`) trains the LSTM from that stretch of
   car-sensor and saves a model version.
4. `python -m ml predict` (or the Java serving program, `--serving java`: scripts/demo/serving.py) serves it while
   the live fleet (--cars) drives: predictions flow to car-sensor-predictions and the view shows readings/s at each
   stage, predictions, alerts and the model.
   The web dashboard (`python -m dashboard`, http://127.0.0.1:8050/) shows the same and more from the start of
   the run to its end: the fleet grid, alerts with their lead, rates and lag, the DLQ, the model's report.
   With --continual (`make demo CONTINUAL=1`, scripts/demo/continual.py) the trained model becomes the registry's
   champion and `python -m ml continual` runs beside the predictor: a retraining, the challenger scored in the
   shadow, the judge's decision; the live fleet drives until that decision.
5. Wait until every live reading has its prediction, stop everything this run started (also on Ctrl-C) and
   print a summary: readings, predictions, alerts, and the failure episodes of the simulator's ground truth
   that the alerts warned ahead or missed (ml/episodes.py). Exit code 0 when every live reading got a prediction.

Servers that were running before (`make up`) are used and left running. Logs of every service go to
.run/demo/<run>/. See scripts/demo/plan.py for how the history and the live speed are sized.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from common.cli import doc_parser
from common.defaults import BRIDGE_METRICS_PORT, DASHBOARD_PORT, FLEET_CARS, MODEL_DIR, PREDICTOR_METRICS_PORT
from common.errors import CarStreamError
from common.kafka import ensure_topics
from common.logs import setup_logging
from common.topics import PREDICTIONS_TOPIC, PREDICTOR_GROUP, READINGS_TOPIC, TOPIC_PARTITIONS
from scripts.demo import continual, serving
from scripts.demo import runtime as demo_runtime
from scripts.demo.plan import HISTORY_CARS, HISTORY_READINGS_PER_CAR, DemoPlan, make_plan
from scripts.demo.stream_watch import MqttCounter, StreamWatcher, commit_group_offsets, end_offsets
from scripts.demo.summary import DemoResult, latest_model_metadata, print_summary
from scripts.demo.view import DemoStatus, DemoView
from scripts.runtime import compose
from scripts.runtime.local import DEFAULT_RUN_DIR, ROOT, free_port, port_in_use
from scripts.runtime.services import Service, ServiceError, ServiceGroup, service_env, wait_for

log = logging.getLogger("demo")

PROGRESS_LINE = re.compile(r" INFO +ml\.[\w.]+: (.*)$")  # the trainer's own log lines, not TensorFlow's chatter

HISTORY_SEED = 7  # another fleet than the live one (seed 42): the model is tested on cars it never saw
LIVE_SEED = 42


def build_parser() -> argparse.ArgumentParser:
    parser = doc_parser("python -m scripts.demo", __doc__)
    parser.add_argument(
        "--cars", type=int, default=FLEET_CARS, help="cars of the live fleet, 1 to 100,000 (default: %(default)s)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=120,
        help="seconds from the first reading to the end of the live fleet "
        "(history and training included; the live fleet gets at least 30 s) (default: 120)",
    )
    parser.add_argument(
        "--runtime",
        choices=demo_runtime.RUNTIMES,
        default=demo_runtime.DEFAULT_RUNTIME,
        help="local: Kafka and Mosquitto as local processes, as `make up` starts them; compose: the compose stack "
        "(a Docker engine); external: servers named by KAFKA_BOOTSTRAP_SERVERS, MQTT_HOST, MQTT_PORT "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--serving",
        choices=serving.PROGRAMS,
        default=serving.DEFAULT_PROGRAM,
        help="the program that serves the model: python (python -m ml predict) or java (ml/streams/, Kafka Streams) "
        "(default: %(default)s)",
    )
    parser.add_argument("--speedup", type=float, help="simulated time speed of the live fleet (default: sized)")
    parser.add_argument(
        "--max-rate", type=float, default=2000.0, help="readings/s the live fleet stays under (default: 2000)"
    )
    parser.add_argument(
        "--history-cars", type=int, default=HISTORY_CARS, help="cars of the history fleet (default: %(default)s)"
    )
    parser.add_argument(
        "--history-readings",
        type=int,
        default=HISTORY_READINGS_PER_CAR,
        help="readings per history car (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=int, help="most training epochs (default: the trainer's)")
    parser.add_argument(
        "--train-workers",
        type=int,
        default=int(os.environ.get("TRAIN_WORKERS") or 1),
        help="training workers (python -m ml train --workers N), at most the readings topic's partitions "
        "(default: TRAIN_WORKERS or 1)",
    )
    parser.add_argument(
        "--continual",
        action="store_true",
        help="continual training in the live phase: python -m ml continual retrains, the predictor scores the "
        "challenger in the shadow, the judge decides; the live fleet drives until that decision",
    )
    parser.add_argument("--model-dir", default=MODEL_DIR, help="model versions (default: %(default)s)")
    parser.add_argument("--readings-topic", default=READINGS_TOPIC, help="default: %(default)s")
    parser.add_argument("--predictions-topic", default=PREDICTIONS_TOPIC, help="default: %(default)s")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to wait for the last predictions")
    parser.add_argument("--log-dir", type=Path, help="service logs and summary.json (default: .run/demo/<run>)")
    parser.add_argument("--plain", action="store_true", help="plain lines instead of the live view (default on no TTY)")
    parser.add_argument(
        "--dashboard-port",
        type=int,
        default=DASHBOARD_PORT,
        help="port of the web dashboard on 127.0.0.1; a free one when taken; 0: no dashboard (default: %(default)s)",
    )
    parser.add_argument(
        "--secure",
        action="store_true",
        help="secured mode: Kafka SASL_SSL with an identity and ACLs per service, MQTT over TLS with a password "
        "per car (SECURITY.md); material in SECURE_DIR (default .run/secure)",
    )
    return parser


class Demo:
    def __init__(self, args: argparse.Namespace, plan: DemoPlan, console: Console) -> None:
        self.args = args
        self.plan = plan
        self.console = console
        self.run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:4]
        self.log_dir = args.log_dir or DEFAULT_RUN_DIR / "demo" / self.run_id
        self.model_dir = Path(args.model_dir) if Path(args.model_dir).is_absolute() else ROOT / args.model_dir
        self.status = DemoStatus(plan.cars, args.runtime)
        self.view = DemoView(self.status, None, None, console, plain=args.plain or not console.is_terminal)
        self.infra: demo_runtime.Infrastructure | None = None
        self.group: ServiceGroup | None = None
        self.counter: MqttCounter | None = None
        self.predictor_group = f"{PREDICTOR_GROUP}-demo-{self.run_id}"  # the predictor's prefix (its ACL if secured)
        self.metrics_ports: dict[str, int] = {}
        self.watcher: StreamWatcher | None = None
        self.started = time.monotonic()
        self.decisions_before = 0
        self.result = DemoResult(
            cars=plan.cars,
            plan=plan.describe(),
            log_dir=str(self.log_dir),
            speedup=plan.live_speedup,
            serving=args.serving,
        )

    # -- phases ---------------------------------------------------------------------------------------------------

    def run(self) -> DemoResult:
        self.view.start()
        self.status.set_phase("starting the infrastructure")
        cars = max(self.plan.cars, self.plan.history_cars)  # secured: each has its MQTT password
        self.infra = demo_runtime.start(self.args.runtime, self.args.secure, cars)
        self.status.runtime = self.infra.runtime
        log.info("infrastructure: %s", self.infra.describe())
        log.info("plan: %s", self.plan.describe())
        bootstrap = self.infra.bootstrap
        if self.infra.runtime == "compose":  # the services too run in containers, on the stack's network
            containers = compose.service_containers(self.run_id, [self.log_dir, self.model_dir])
            self.group = ServiceGroup(compose.inside_the_stack(), self.log_dir, containers=containers)
        else:
            env = service_env(bootstrap, self.infra.mqtt_host, self.infra.mqtt_port, self.infra.registry_url)
            self.group = ServiceGroup(env, self.log_dir)
        # This process reads Kafka as the operator (`admin` when secured): topics, offsets, the live view. The
        # stack's topics, the readings and the predictions under the names this run gives them.
        named = {READINGS_TOPIC: self.args.readings_topic, PREDICTIONS_TOPIC: self.args.predictions_topic}
        topics = {named.get(topic, topic): partitions for topic, partitions in TOPIC_PARTITIONS.items()}
        ensure_topics(bootstrap, self.infra.kafka_security, topics)
        login = self.infra.secure.mqtt_settings("monitor") if self.infra.secure else None
        self.counter = MqttCounter(self.infra.mqtt_host, self.infra.mqtt_port, login=login).start()
        started = self.started = time.monotonic()
        self._plan_metrics()
        self._start_dashboard()
        self._start_bridge()
        self._history()
        self._train()
        self._live(self.plan.live_seconds(time.monotonic() - started))
        self._drain()
        return self.result

    def _start_bridge(self) -> None:
        self.status.set_phase("starting the bridge")
        bridge = self.group.start(
            "bridge",
            "bridge",
            **self.infra.identity("bridge"),
            BRIDGE_CLIENT_ID=f"demo-bridge-{self.run_id}",
            BRIDGE_SESSION_EXPIRY="300",  # the broker forgets this run's session soon after it ends
            BRIDGE_KAFKA_TOPIC=self.args.readings_topic,
            **self._metrics_env("bridge", "BRIDGE"),
        )
        wait_until_logged(bridge, "subscribing to", 90, self.group)
        time.sleep(1.0)  # the SUBACK follows the log line; a reading published before it would have no subscriber

    def _plan_metrics(self) -> None:
        """Metrics ports of the bridge and the predictor, which the dashboard scrapes: free ones on this machine;
        their usual ones in containers (each has its own network)."""
        inside = self.infra.runtime == "compose"
        usual = {
            "bridge": BRIDGE_METRICS_PORT,
            "predictor": PREDICTOR_METRICS_PORT,
        }
        self.metrics_ports = usual if inside else {name: free_port() for name in usual}

    def _metrics_env(self, service: str, prefix: str) -> dict[str, str]:
        env = {f"{prefix}_METRICS_PORT": str(self.metrics_ports[service])}
        if self.infra.runtime == "compose":
            env[f"{prefix}_METRICS_HOST"] = "0.0.0.0"  # inside its container, for the dashboard's; not published
        return env

    def _start_dashboard(self) -> None:
        if not self.args.dashboard_port:
            return
        port = self.args.dashboard_port
        if port_in_use(port):
            port = free_port()
            log.warning("port %d is taken: the dashboard takes %d", self.args.dashboard_port, port)
        inside = self.infra.runtime == "compose"
        host = f"{self.group.containers.prefix}-{{}}" if inside else "127.0.0.1"
        urls = ",".join(
            f"{name}=http://{host.format(name)}:{port_}/metrics" for name, port_ in self.metrics_ports.items()
        )
        self.group.start(
            "dashboard",
            "dashboard",
            publish={DASHBOARD_PORT: port} if inside else None,
            DASHBOARD_HOST="0.0.0.0" if inside else "127.0.0.1",
            DASHBOARD_PORT=str(DASHBOARD_PORT if inside else port),
            DASHBOARD_METRICS_URLS=urls,
            DASHBOARD_MODEL_DIR=str(self.model_dir),
            DASHBOARD_PREDICTOR_GROUP=self.predictor_group,
            DASHBOARD_READINGS_TOPIC=self.args.readings_topic,
            DASHBOARD_PREDICTIONS_TOPIC=self.args.predictions_topic,
            DASHBOARD_LOOKBACK_SECONDS="0",  # this run's records only
            **self.infra.identity("dashboard"),
        )
        self.status.dashboard_url = f"http://127.0.0.1:{port}/"
        log.info("dashboard: %s (until the demo ends)", self.status.dashboard_url)

    def _watch(self, offsets: dict[tuple[str, int], int]) -> StreamWatcher:
        if self.watcher is not None:
            self.watcher.stop()
        self.watcher = StreamWatcher(
            self.infra.bootstrap,
            self.infra.kafka_security,
            self.args.readings_topic,
            self.args.predictions_topic,
            offsets,
            self.infra.registry_url,
        ).start()
        self.view.attach(self.watcher, self.counter)
        return self.watcher

    def _offsets(self) -> dict[tuple[str, int], int]:
        topics = [self.args.readings_topic, self.args.predictions_topic]
        return end_offsets(self.infra.bootstrap, self.infra.kafka_security, topics)

    def _history(self) -> None:
        plan = self.plan
        watcher = self._watch(self._offsets())
        self.history_start_ms = int(time.time() * 1000) - 1000
        self.status.set_phase(
            "1/4 history",
            f"{plan.history_cars} cars x {plan.history_readings_per_car} readings -> MQTT -> bridge -> Kafka",
        )
        simulator = self.group.start(
            "simulator-history",
            "simulator",
            *simulator_args(plan.history_cars, HISTORY_SEED, f"demo-history-{self.run_id}", self.log_dir),
            "--count",
            str(plan.history_count),
            "--speedup",
            "100000",
            **self.infra.identity("simulator"),
        )
        wait_for(lambda: not simulator.running(), 600, what="the history fleet", check=self.group.check)
        published = read_published(self.log_dir / "simulator-history-summary.json")
        if not watcher.wait_until(lambda st: len(st.readings) >= published, 120):
            raise ServiceError(
                f"only {watcher.read(lambda st: len(st.readings))} of {published} history readings "
                f"reached {self.args.readings_topic}; see {self.log_dir}/bridge.log"
            )
        log.info("history: %d readings on %s", published, self.args.readings_topic)

    def _train(self) -> None:
        workers = self.args.train_workers
        on = f" on {workers} workers" if workers > 1 else ""
        self.status.set_phase("2/4 training", f"python -m ml train{on} on the history in car-sensor")
        args = ["train", "--topic", self.args.readings_topic, "--start-time", str(self.history_start_ms)]
        args += ["--model-dir", str(self.model_dir)]
        if self.args.epochs:
            args += ["--epochs", str(self.args.epochs)]
        if self.args.train_workers > 1:
            args += ["--workers", str(self.args.train_workers)]
        trainer = self.group.start("trainer", "ml", *args, **self.infra.identity("trainer"))
        while trainer.running():
            progress = [m.group(1) for line in trainer.log_lines() if (m := PROGRESS_LINE.search(line))]
            if progress:
                self.status.detail = progress[-1][:110]
            time.sleep(1.0)
        if trainer.returncode != 0:
            trainer.check_running()
        self.status.model = latest_model_metadata(self.model_dir)
        if self.status.model is None:
            raise ServiceError(f"the trainer wrote no model into {self.model_dir}; see {trainer.log_file}")
        self.result.model = self.status.model
        log.info("model %s trained", self.status.model.get("version"))
        if self.args.continual:
            continual.make_champion(self.model_dir, self.status.model["version"])
            self.decisions_before = len(continual.decisions_after(self.model_dir, 0))

    def _live(self, seconds: float) -> None:
        plan = self.plan
        offsets = self._offsets()
        secure = self.infra.secure is not None
        group_id = serving.group_id(self.args.serving, secure, self.predictor_group)
        if group_id != self.predictor_group:
            serving.reset_application(self.infra.bootstrap, self.infra.kafka_security, group_id)
        commit_group_offsets(
            self.infra.bootstrap, self.infra.kafka_security, group_id, offsets, self.args.readings_topic
        )
        readings = self.args.readings_topic
        self.result.live_start_offsets = {str(p): offset for (t, p), offset in offsets.items() if t == readings}
        self._watch(offsets)
        self.status.set_phase("3/4 live", f"starting {serving.DESCRIPTION[self.args.serving]}")
        predictor = serving.Predictor(self.args.serving, self.group, self.log_dir / "predictor-state")
        predictor.start(
            ML_GROUP_ID=group_id,
            ML_MODEL_DIR=str(self.model_dir),
            **self._metrics_env("predictor", "ML"),
            ML_TOPIC=self.args.readings_topic,
            ML_OUTPUT_TOPIC=self.args.predictions_topic,
            **self.infra.identity(serving.IDENTITY[self.args.serving]),
        )
        # The live fleet starts once the predictor holds its partitions, so predictions show while it drives.
        predictor.wait_serving(180)
        self.status.set_phase("3/4 live", f"{plan.cars:,} cars at {plan.live_speedup:g}x for {seconds:.0f} s")
        simulator = self.group.start(
            "simulator",
            "simulator",
            *simulator_args(plan.cars, LIVE_SEED, f"demo-live-{self.run_id}", self.log_dir),
            "--speedup",
            f"{plan.live_speedup:g}",
            "--duration",
            f"{continual.CONTINUAL_TIMEOUT_S if self.args.continual else seconds:.1f}",
            **self.infra.identity("simulator"),
        )
        self.live_started = time.monotonic()
        if self.args.continual:
            self._continual(simulator)
        wait_for(lambda: not simulator.running(), seconds + 120, what="the live fleet", check=self.group.check)
        self.result.live_seconds = time.monotonic() - self.live_started
        self.result.published = read_published(self.log_dir / "simulator-summary.json")

    def _continual(self, simulator: Service) -> None:
        """python -m ml continual beside the predictor; the live fleet stops once the judge decided."""
        since = time.monotonic() - self.started + 60
        self.group.start(
            "continual", "ml", "continual",
            ML_MODEL_DIR=str(self.model_dir), ML_TOPIC=self.args.readings_topic,
            ML_PREDICTIONS_TOPIC=self.args.predictions_topic,
            **continual.settings(self.plan.history_cars, self.plan.cars, since),
            **self.infra.identity("continual"),
        )  # fmt: skip

        def decisions() -> list[dict]:
            made = continual.decisions_after(self.model_dir, self.decisions_before)
            self.status.detail = continual.describe(made)
            self.result.decisions = made
            return made

        wait_for(
            lambda: continual.decided(decisions()) or not simulator.running(),
            continual.CONTINUAL_TIMEOUT_S + 60,
            what="the judge's decision",
            check=self.group.check,
        )
        if not continual.decided(self.result.decisions):
            raise ServiceError(f"no decision on a challenger within {continual.CONTINUAL_TIMEOUT_S:.0f} s of live data")
        simulator.stop()

    def _drain(self) -> None:
        published = self.result.published
        self.status.set_phase("4/4 draining", f"waiting for the predictions of all {published:,} live readings")
        self.watcher.wait_until(
            lambda st: len(st.readings) >= published and len(st.predictions) >= len(st.readings) and not st.missing(),
            self.args.drain_timeout,
            interval=1.0,
        )

    # -- the end --------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        self.view.stop()
        if self.group is not None:
            self.status.set_phase("stopping")
            self.group.stop_all()
        if self.watcher is not None:
            self.result.take(self.watcher)
            self.watcher.stop()
        if self.counter is not None:
            self.result.mqtt_messages = self.counter.count
            self.counter.stop()
        if self.infra is not None:
            self.infra.stop()


def simulator_args(cars: int, seed: int, client_id: str, log_dir: Path) -> list[str]:
    name = "simulator-history" if "history" in client_id else "simulator"
    return [
        "--cars", str(cars), "--seed", str(seed), "--qos", "1", "--client-id", client_id,
        "--summary-file", str(log_dir / f"{name}-summary.json"), "--no-progress",
    ]  # fmt: skip


def read_published(summary_file: Path) -> int:
    try:
        return int(json.loads(summary_file.read_text())["published"])
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise ServiceError(f"the simulator left no summary in {summary_file}: {exc}") from exc


def wait_until_logged(service: Service, text: str, timeout: float, group: ServiceGroup) -> None:
    wait_for(
        lambda: any(text in line for line in service.log_lines()),
        timeout,
        what=f"{service.name} to log {text!r} (see {service.log_file})",
        check=group.check,
    )


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # logs and CI: wide enough for the summary's lines, never a guessed 80
    try:
        plan = make_plan(
            args.cars, args.duration, args.max_rate, args.speedup, args.history_cars, args.history_readings
        )
    except CarStreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.continual and args.serving != "python":
        print("error: CONTINUAL=1 needs SERVING=python: only python -m ml predict scores a challenger in the shadow")
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    demo = Demo(args, plan, console)
    code = 1
    try:
        demo.run()
        code = 0
    except KeyboardInterrupt:
        demo.result.interrupted = True
        code = 130
        log.warning("interrupted: stopping everything this demo started")
    except CarStreamError as exc:
        demo.result.error = str(exc)
        log.error("%s", exc)
    finally:
        # A second Ctrl-C (or a SIGTERM to the process group) must not cut the clean-up short: that would leave
        # the services and servers this run started behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()
    if demo.watcher is None:  # it ended before any reading flowed: the error says all there is
        print(f"error: {demo.result.error}" if demo.result.error else "stopped before any reading flowed")
        return code
    print_summary(demo.result, console)
    (demo.log_dir / "summary.json").parent.mkdir(parents=True, exist_ok=True)
    (demo.log_dir / "summary.json").write_text(json.dumps(demo.result.as_dict(), indent=2) + "\n")
    if code == 0 and not demo.result.complete:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
