package io.carstream.streams;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.prometheus.metrics.core.metrics.Counter;
import io.prometheus.metrics.core.metrics.Gauge;
import io.prometheus.metrics.core.metrics.Histogram;
import io.prometheus.metrics.core.metrics.Info;
import io.prometheus.metrics.expositionformats.PrometheusTextFormatWriter;
import io.prometheus.metrics.instrumentation.jvm.JvmMetrics;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.Executors;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The Python predictor's metric names (ml/serving/metrics.py) where the meaning is the same, so that the dashboard
 * and the alerts read either serving program; `predictor_serving_info{program="java"}` says which one serves.
 * Served with `/healthz` (liveness) and `/readyz` (readiness) on one port, as common/health.py does.
 */
final class Metrics {
    private static final Logger log = LoggerFactory.getLogger(Metrics.class);
    static final double[] LATENCY_BUCKETS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0};
    static final double[] OOD_BUCKETS = {0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 50.0, 100.0};

    static final Counter PREDICTIONS = Counter.builder().name("predictor_predictions_total")
            .help("Predictions handed to Kafka (committed with their readings' offsets, exactly once)").register();
    static final Counter ALERTS = Counter.builder().name("predictor_alerts_total")
            .help("Alerting predictions (failure_predicted): at or above the threshold").register();
    static final Counter ALERTS_SUPPRESSED = Counter.builder().name("predictor_alerts_suppressed_total")
            .help("Predictions at or above the threshold whose alert was suppressed (alert_suppressed): the car "
                    + "reported a failure in the reading or in its previous W readings").register();
    static final Counter DLQ = Counter.builder().name("predictor_dlq_total")
            .help("Records that could not be decoded and went to the DLQ").register();
    static final Counter REGISTRY_ERRORS = Counter.builder().name("predictor_kafka_unavailable_total")
            .help("Batches held back because the schema registry did not answer (retried)").register();
    static final Histogram BATCH_SIZE = Histogram.builder().name("predictor_batch_size")
            .help("Readings per model batch")
            .classicUpperBounds(1, 10, 50, 100, 500, 1000, 2500, 5000, 10_000, 25_000).register();
    static final Histogram MODEL_LATENCY = Histogram.builder().name("predictor_model_latency_seconds")
            .help("Model call time per batch").classicUpperBounds(LATENCY_BUCKETS).register();
    static final Histogram END_TO_END = Histogram.builder().name("predictor_end_to_end_latency_seconds")
            .help("event_time of a reading to predicted_at").classicUpperBounds(LATENCY_BUCKETS).register();
    static final Counter OOD = Counter.builder().name("predictor_ood_predictions_total")
            .help("Predictions whose reading lies outside the model's training range (ml/ood.py)").register();
    static final Counter OOD_FEATURES = Counter.builder().name("predictor_ood_features_total")
            .help("Out-of-distribution readings by a feature that made them so").labelNames("feature").register();
    static final Histogram OOD_SCORE = Histogram.builder().name("predictor_ood_score")
            .help("OOD score of predictions: training-range widths outside the training range")
            .classicUpperBounds(OOD_BUCKETS).register();
    static final Gauge CARS_HELD = Gauge.builder().name("predictor_cars_held")
            .help("Cars whose window the state stores hold (RocksDB's estimate, summed over this instance's tasks)")
            .register();
    // Info metrics: exposed as predictor_model_info{version=...} 1, the Python predictor's gauge sample
    static final Info MODEL_VERSION = Info.builder().name("predictor_model_info")
            .help("The model version being served (value 1)").labelNames("version").register();
    static final Info SERVING = Info.builder().name("predictor_serving_info")
            .help("Which program serves the model (value 1)").labelNames("program").register();

    private Metrics() {}

    static void setModelVersion(String version) {
        MODEL_VERSION.setLabelValues(version);
    }

    /** A check: null when fine, else what is wrong. */
    interface Check extends Supplier<String> {}

    static HttpServer serve(String host, int port, Check liveness, Check readiness) throws IOException {
        SERVING.setLabelValues("java");
        JvmMetrics.builder().register();
        HttpServer server = HttpServer.create(new InetSocketAddress(host, port), 0);
        PrometheusTextFormatWriter writer = new PrometheusTextFormatWriter(false);
        server.createContext("/", exchange -> {
            String path = exchange.getRequestURI().getPath();
            switch (path) {
                case "/healthz" -> answer(exchange, liveness.get());
                case "/readyz" -> answer(exchange, readiness.get());
                case "/metrics", "/" -> {
                    ByteArrayOutputStream body = new ByteArrayOutputStream();
                    writer.write(body, PrometheusRegistry.defaultRegistry.scrape());
                    send(exchange, 200, writer.getContentType(), body.toByteArray());
                }
                default -> send(exchange, 404, "text/plain", "not found\n".getBytes(StandardCharsets.UTF_8));
            }
        });
        server.setExecutor(Executors.newFixedThreadPool(2, r -> {
            Thread thread = new Thread(r, "metrics");
            thread.setDaemon(true);
            return thread;
        }));
        server.start();
        log.info("metrics on http://{}:{}/metrics, liveness /healthz, readiness /readyz", host, port);
        return server;
    }

    private static void answer(HttpExchange exchange, String problem) throws IOException {
        byte[] body = (problem == null ? "ok\n" : problem + "\n").getBytes(StandardCharsets.UTF_8);
        send(exchange, problem == null ? 200 : 503, "text/plain; charset=utf-8", body);
    }

    private static void send(HttpExchange exchange, int status, String type, byte[] body) throws IOException {
        exchange.getResponseHeaders().set("Content-Type", type);
        exchange.sendResponseHeaders(status, body.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(body);
        }
    }
}
