package io.carstream.streams;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;

/**
 * Settings from flags, then the environment variables the Python services read, then defaults: the same names as
 * `python -m ml predict` where the meaning is the same (ML_MODEL_DIR, ML_OUTPUT_TOPIC, KAFKA_BOOTSTRAP_SERVERS...),
 * ML_STREAMS_* for what only this program has. The Kafka identity comes from the environment only (never a flag,
 * which any user of the machine can read in `ps`).
 */
record Settings(
        String bootstrapServers,
        Optional<String> schemaRegistryUrl,
        String modelDir,
        String topic,
        String outputTopic,
        String dlqTopic,
        String applicationId,
        String stateDir,
        int metricsPort,
        String metricsHost,
        Optional<Double> threshold,
        double oodThreshold,
        double reloadInterval,
        int maxBatch,
        double batchLinger,
        int modelThreads,
        int streamThreads,
        int standbyReplicas,
        double stallSeconds,
        int sessionTimeoutMs,
        Optional<String> instanceId,
        int commitIntervalMs,
        Properties security) {

    /** One setting: its flag, its environment variable, its default (null: none), what it means. */
    record Option(String flag, String env, String fallback, String help) {}

    static final List<Option> OPTIONS = List.of(
            new Option("kafka-bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", "localhost:9092",
                    "Kafka bootstrap servers, host:port[,host:port]"),
            new Option("schema-registry-url", "SCHEMA_REGISTRY_URL", null,
                    "Confluent-compatible schema registry URL: predictions are written in Confluent framing and "
                            + "readings in it are decoded by their schema id; unset means Avro single-object encoding"),
            new Option("model-dir", "ML_MODEL_DIR", "artifacts/models",
                    "Folder of versioned model artifacts; its registry's champion is served, else the newest "
                            + "complete version, and a change is loaded without a restart"),
            new Option("topic", "ML_TOPIC", "car-sensor", "Topic of the readings"),
            new Option("output-topic", "ML_OUTPUT_TOPIC", "car-sensor-predictions",
                    "Topic the predictions go to (Avro, key = car_id)"),
            new Option("dlq-topic", "ML_DLQ_TOPIC", "car-sensor-dlq", "Topic for records that cannot be decoded"),
            new Option("application-id", "ML_STREAMS_APPLICATION_ID", "car-failure-streams",
                    "Kafka Streams application id: the consumer group, the prefix of the internal topics "
                            + "(changelogs) and of the transactional ids (secured mode: the ACLs name it)"),
            new Option("state-dir", "ML_STREAMS_STATE_DIR", ".run/streams",
                    "Local folder of the state stores (a cache: the changelog topics hold the state)"),
            new Option("metrics-port", "ML_METRICS_PORT", "9109",
                    "Port of /metrics (Prometheus), /healthz and /readyz (0 = off)"),
            new Option("metrics-host", "ML_METRICS_HOST", "127.0.0.1",
                    "Address the metrics and health endpoint binds to (0.0.0.0: every interface)"),
            new Option("threshold", "ML_THRESHOLD", null, "Decision threshold; unset means the model's own (metadata)"),
            new Option("ood-threshold", "ML_OOD_THRESHOLD", "1.0",
                    "Out of distribution when a feature lies more than this many training-range widths outside the "
                            + "training range (ml/ood.py)"),
            new Option("reload-interval", "ML_RELOAD_INTERVAL", "5",
                    "Seconds between looks for the model version to serve"),
            new Option("max-batch", "ML_MAX_BATCH", "5000",
                    "Most readings per model call: a task's buffer is predicted when it holds this many"),
            new Option("batch-linger", "ML_BATCH_LINGER", "0.1",
                    "Seconds between two predictions of a task's buffer (wall clock) when it is not full"),
            new Option("model-threads", "ML_MODEL_THREADS", "1",
                    "TensorFlow threads per model call (0: TensorFlow's default, about one per core)"),
            new Option("stream-threads", "ML_STREAMS_THREADS", "1", "Kafka Streams processing threads"),
            new Option("standby-replicas", "ML_STREAMS_STANDBY_REPLICAS", "0",
                    "Standby replicas of each task's state (warm copies on other instances)"),
            new Option("stall-seconds", "ML_STALL_SECONDS", "300",
                    "Liveness (/healthz) fails when an assigned task has not predicted for this long"),
            new Option("session-timeout-ms", "ML_SESSION_TIMEOUT_MS", "10000",
                    "Consumer group session timeout (ms): how long a crashed instance's partitions wait"),
            new Option("instance-id", "ML_INSTANCE_ID", null,
                    "Static group membership id (e.g. the pod name): a restart takes its partitions back at once"),
            new Option("commit-interval-ms", "ML_STREAMS_COMMIT_INTERVAL_MS", "100",
                    "Milliseconds between two transactions: predictions become visible to read_committed readers "
                            + "when theirs commits; longer spreads its fixed cost over more readings"));

    static final String[] SECURITY_VARIABLES = {
        "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_CA_LOCATION"
    };

    static final class UsageError extends RuntimeException {
        UsageError(String message) {
            super(message);
        }
    }

    static Settings parse(String[] args, Map<String, String> environment) {
        Map<String, String> flags = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            if (!arg.startsWith("--")) {
                throw new UsageError("unexpected argument " + arg + " (settings are --name value)");
            }
            String name = arg.substring(2);
            String value;
            int equals = name.indexOf('=');
            if (equals >= 0) {
                value = name.substring(equals + 1);
                name = name.substring(0, equals);
            } else if (i + 1 < args.length) {
                value = args[++i];
            } else {
                throw new UsageError("--" + name + " needs a value");
            }
            String flag = name;
            if (OPTIONS.stream().noneMatch(o -> o.flag().equals(flag))) {
                throw new UsageError("unknown setting --" + name + " (see --help)");
            }
            flags.put(name, value);
        }
        Map<String, String> values = new LinkedHashMap<>();
        for (Option option : OPTIONS) {
            String value = flags.get(option.flag());
            if (value == null || value.isEmpty()) {
                value = environment.get(option.env());
            }
            if (value == null || value.isEmpty()) {
                value = option.fallback();
            }
            values.put(option.flag(), value);
        }
        Parser p = new Parser(values);
        return new Settings(
                p.text("kafka-bootstrap-servers"),
                Optional.ofNullable(values.get("schema-registry-url")).map(url -> url.replaceAll("/+$", "")),
                p.text("model-dir"),
                p.text("topic"),
                p.text("output-topic"),
                p.text("dlq-topic"),
                p.text("application-id"),
                p.text("state-dir"),
                (int) p.number("metrics-port", 0, 65535),
                p.text("metrics-host"),
                Optional.ofNullable(values.get("threshold")).map(v -> p.number("threshold", 0, 1)),
                p.number("ood-threshold", 0, Double.MAX_VALUE),
                p.number("reload-interval", 0.01, Double.MAX_VALUE),
                (int) p.number("max-batch", 1, 1_000_000),
                p.number("batch-linger", 0.001, 3600),
                (int) p.number("model-threads", 0, 1024),
                (int) p.number("stream-threads", 1, 1024),
                (int) p.number("standby-replicas", 0, 16),
                p.number("stall-seconds", 1, Double.MAX_VALUE),
                (int) p.number("session-timeout-ms", 1000, 3_600_000),
                Optional.ofNullable(values.get("instance-id")),
                (int) p.number("commit-interval-ms", 1, 3_600_000),
                kafkaSecurity(environment));
    }

    private record Parser(Map<String, String> values) {
        String text(String flag) {
            return values.get(flag);
        }

        double number(String flag, double low, double high) {
            String text = values.get(flag);
            double value;
            try {
                value = Double.parseDouble(text);
            } catch (NumberFormatException e) {
                throw new UsageError("--" + flag + " must be a number, got " + text);
            }
            if (value < low || value > high || Double.isNaN(value)) {
                throw new UsageError("--" + flag + " must be in [" + low + ", " + high + "], got " + text);
            }
            return value;
        }
    }

    /** The Java client's properties of the identity the KAFKA_* variables give (common/settings.py's KafkaSecurity). */
    static Properties kafkaSecurity(Map<String, String> environment) {
        Properties properties = new Properties();
        String protocol = environment.getOrDefault("KAFKA_SECURITY_PROTOCOL", "");
        if (protocol.isEmpty() || protocol.equals("PLAINTEXT")) {
            return properties;
        }
        if (!List.of("SSL", "SASL_PLAINTEXT", "SASL_SSL").contains(protocol)) {
            throw new UsageError("KAFKA_SECURITY_PROTOCOL must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, got "
                    + protocol);
        }
        properties.put("security.protocol", protocol);
        if (protocol.startsWith("SASL")) {
            String mechanism = environment.getOrDefault("KAFKA_SASL_MECHANISM", "");
            mechanism = mechanism.isEmpty() ? "SCRAM-SHA-512" : mechanism;
            String user = environment.getOrDefault("KAFKA_SASL_USERNAME", "");
            String password = environment.getOrDefault("KAFKA_SASL_PASSWORD", "");
            if (user.isEmpty()) {
                throw new UsageError("KAFKA_SASL_USERNAME is needed with KAFKA_SECURITY_PROTOCOL=" + protocol);
            }
            String module = mechanism.startsWith("SCRAM")
                    ? "org.apache.kafka.common.security.scram.ScramLoginModule"
                    : "org.apache.kafka.common.security.plain.PlainLoginModule";
            properties.put("sasl.mechanism", mechanism);
            properties.put("sasl.jaas.config", module + " required username=\"" + quoted(user)
                    + "\" password=\"" + quoted(password) + "\";");
        }
        String ca = environment.getOrDefault("KAFKA_SSL_CA_LOCATION", "");
        if (!ca.isEmpty()) {
            properties.put("ssl.truststore.type", "PEM");
            properties.put("ssl.truststore.location", ca);
        }
        return properties;
    }

    private static String quoted(String value) {
        return value.replace("\\", "\\\\").replace("\"", "\\\"");
    }

    /** One line for the logs: who logs in how (never the password). */
    String identity() {
        String protocol = security.getProperty("security.protocol", "PLAINTEXT");
        String jaas = security.getProperty("sasl.jaas.config", "");
        int at = jaas.indexOf("username=\"");
        String user = at < 0 ? "" : jaas.substring(at + 10, jaas.indexOf('"', at + 10));
        return protocol + (user.isEmpty() ? "" : " (" + security.getProperty("sasl.mechanism") + ") as " + user);
    }

    static String help() {
        StringBuilder text = new StringBuilder();
        text.append("usage: java -jar car-failure-streams.jar [--setting value ...]\n\n")
                .append("Serves the model folder's champion, else its newest version (its SavedModel) to every reading of the\n")
                .append("readings topic: a Kafka Streams application, exactly once (processing.guarantee=exactly_once_v2),\n")
                .append("each car's last W readings in a state store backed by a changelog topic. Writes one prediction\n")
                .append("per reading (the prediction schema, key = car_id), and undecodable records to the DLQ.\n\n")
                .append("Settings (flag, else environment variable, else default):\n");
        for (Option option : OPTIONS) {
            text.append(String.format("  --%-24s %s%n", option.flag() + " V", option.help()));
            text.append(String.format("  %-26s [%s; default: %s]%n", "", option.env(),
                    option.fallback() == null ? "unset" : option.fallback()));
        }
        text.append("\nThe Kafka identity comes from the environment only: ")
                .append(String.join(", ", SECURITY_VARIABLES))
                .append(" (PLAINTEXT when unset).\n");
        return text.toString();
    }
}
