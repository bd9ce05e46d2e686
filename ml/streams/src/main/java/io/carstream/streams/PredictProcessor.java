package io.carstream.streams;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.TaskId;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.Stores;
import io.carstream.streams.PendingRecovery.Pending;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One task's readings in, one prediction per reading out, exactly once.
 *
 * <p>A model call costs about as much for 4,096 windows as for 20 (TensorFlow's fixed cost per call), so readings
 * are predicted in batches: a task buffers them and predicts the buffer when it holds --max-batch readings or every
 * --batch-linger seconds. Kafka Streams commits when its commit interval says, buffer or not, so the offset of the
 * first buffered reading is kept in the `pending` store: Kafka Streams commits the stores' changelogs, the
 * predictions and the input offsets in one transaction, so after a crash the records from that offset up to the
 * committed one are exactly those taken and not predicted, and they are read again ({@link PendingRecovery}): none
 * is lost, none predicted twice. One store write per batch, not one per reading.
 *
 * <p>Each car's last W readings live in the `windows` store (RocksDB, bounded by disk rather than memory, restored
 * from its changelog after a crash): {@link CarWindow} keeps them exactly as the Python predictor does, so that both
 * programs give the same window, and so the same probability, for the same reading; and the same suppression: no
 * alert on a reading whose car reported a failure in it or in its previous W readings (ml/episodes.py).
 */
final class PredictProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    private static final Logger log = LoggerFactory.getLogger(PredictProcessor.class);
    static final String WINDOWS = "windows";
    static final String PENDING = "pending";
    static final String PREDICTIONS_SINK = "predictions";
    static final String DLQ_SINK = "dlq";
    static final String SERVICE = "predictor-java";
    static final String UNDECODABLE = "undecodable";
    static final int DLQ_VALUE_LIMIT = 512 * 1024;
    static final int DLQ_DETAIL_LIMIT = 1000;
    private static final DateTimeFormatter ISO_MILLIS = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSSxxx");

    /** When a task last predicted (or found nothing to predict): liveness. */
    static final Map<TaskId, Long> LAST_TURN = new ConcurrentHashMap<>();
    private static final Map<TaskId, Long> CARS = new ConcurrentHashMap<>();

    static StoreBuilder<KeyValueStore<String, byte[]>> windowsStore() {
        return Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(WINDOWS), Serdes.String(), Serdes.ByteArray());
    }

    static StoreBuilder<KeyValueStore<Integer, Long>> pendingStore() {
        // partition -> offset of its first buffered reading; in memory, its changelog makes it survive a crash
        return Stores.keyValueStoreBuilder(Stores.inMemoryKeyValueStore(PENDING), Serdes.Integer(), Serdes.Long());
    }

    private final Settings settings;
    private final ModelWatcher models;
    private final ReadingDecoder decoder;
    private final PredictionEncoder encoder;
    private final PendingRecovery recovery;
    private final List<Pending> buffer = new ArrayList<>();
    private ProcessorContext<byte[], byte[]> context;
    private KeyValueStore<String, byte[]> windows;
    private KeyValueStore<Integer, Long> pending;
    private ServedModel served;
    private long registryRetryAt;

    PredictProcessor(Settings settings, ModelWatcher models, ReadingDecoder decoder, PredictionEncoder encoder,
            PendingRecovery recovery) {
        this.settings = settings;
        this.models = models;
        this.decoder = decoder;
        this.encoder = encoder;
        this.recovery = recovery;
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        this.context = context;
        this.windows = context.getStateStore(WINDOWS);
        this.pending = context.getStateStore(PENDING);
        try (KeyValueIterator<Integer, Long> restored = pending.all()) {
            while (restored.hasNext()) { // readings committed before a crash and not predicted yet
                KeyValue<Integer, Long> first = restored.next();
                List<Pending> found = recovery.read(first.key, first.value);
                buffer.addAll(found);
                log.info("task {}: {} readings restored from the pending store's changelog (partition {} from "
                        + "offset {}), read again", context.taskId(), found.size(), first.key, first.value);
            }
        }
        LAST_TURN.put(context.taskId(), System.currentTimeMillis());
        long linger = Math.max(1, (long) (settings.batchLinger() * 1000));
        context.schedule(Duration.ofMillis(linger), PunctuationType.WALL_CLOCK_TIME, now -> predictPending());
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        var source = context.recordMetadata().orElseThrow();
        if (buffer.isEmpty()) { // a task reads one partition: the first buffered reading starts the range
            pending.put(source.partition(), source.offset());
        }
        buffer.add(new Pending(source.partition(), source.offset(), record.key(), record.value()));
        if (buffer.size() >= settings.maxBatch()) {
            predictPending();
            // Still full: the schema registry does not answer. Hold the stream thread rather than buffer without
            // bound; Kafka Streams takes no more records meanwhile.
            while (buffer.size() >= settings.maxBatch()) {
                try {
                    Thread.sleep(Math.max(1, registryRetryAt - System.currentTimeMillis()));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
                predictPending();
            }
        }
    }

    @Override
    public void close() {
        LAST_TURN.remove(context.taskId());
        CARS.remove(context.taskId());
        Metrics.CARS_HELD.set(CARS.values().stream().mapToLong(Long::longValue).sum());
    }

    /** A decoded reading, with its feature row in the served model's order. */
    private record Reading(String carId, long seq, long eventTime, boolean hashed, boolean failed, float[] row,
            List<String> outOfRange, List<String> missing) {}

    private void predictPending() {
        LAST_TURN.put(context.taskId(), System.currentTimeMillis());
        if (buffer.isEmpty() || System.currentTimeMillis() < registryRetryAt) {
            return;
        }
        ServedModel model = models.current();
        if (model != served) {
            log.info("task {}: serving model {} (window {}, horizon {}, threshold {})", context.taskId(),
                    model.version, model.window, model.horizon, threshold(model));
            served = model;
            Metrics.setModelVersion(model.version);
        }
        List<Pending> batch = buffer;
        // Decode all before forwarding anything: a registry that does not answer leaves the batch untouched for
        // the next try, with nothing of it sent.
        List<Reading> readings = new ArrayList<>(batch.size());
        List<Pending> undecodable = new ArrayList<>();
        List<String> reasons = new ArrayList<>();
        try {
            encoder.connect();
            for (Pending record : batch) {
                try {
                    readings.add(reading(decoder.decode(record.value()), model));
                } catch (ReadingDecoder.DecodeError e) {
                    undecodable.add(record);
                    reasons.add(e.getMessage());
                }
            }
        } catch (SchemaRegistry.Unavailable e) {
            Metrics.REGISTRY_ERRORS.inc();
            log.warn("task {}: {} readings wait: {}; retrying in 1 s", context.taskId(), batch.size(), e.getMessage());
            registryRetryAt = System.currentTimeMillis() + 1000;
            return;
        }
        for (int i = 0; i < undecodable.size(); i++) {
            deadLetter(undecodable.get(i), reasons.get(i));
        }
        predict(readings, model);
        batch.stream().map(Pending::partition).distinct().forEach(pending::delete);
        buffer.clear();
        CARS.put(context.taskId(), windows.approximateNumEntries());
        Metrics.CARS_HELD.set(CARS.values().stream().mapToLong(Long::longValue).sum());
    }

    private double threshold(ServedModel model) {
        return settings.threshold().orElse(model.threshold);
    }

    private static Reading reading(GenericRecord record, ServedModel model) throws ReadingDecoder.DecodeError {
        List<String> missing = new ArrayList<>();
        float[] row = ReadingDecoder.row(record, model.features, model.mean, missing, model.version);
        List<String> outOfRange = new ArrayList<>();
        if (record.get("out_of_range") instanceof List<?> names) {
            names.forEach(name -> outOfRange.add(name.toString()));
        }
        Object origin = record.get("seq_origin");
        boolean hashed = origin != null && ReadingDecoder.CONTENT_HASH.equals(origin.toString());
        boolean failed = Boolean.TRUE.equals(record.get("failure_occurred")); // null: no ground truth, never failed
        return new Reading(record.get("car_id").toString(), (Long) record.get("seq"),
                (Long) record.get("event_time"), hashed, failed, row, outOfRange, missing);
    }

    private void predict(List<Reading> readings, ServedModel model) {
        int n = readings.size();
        if (n == 0) {
            return;
        }
        int size = model.window * model.featureCount();
        float[] batch = new float[n * size];
        boolean[] suppressed = new boolean[n];
        Map<String, CarWindow> cars = new HashMap<>();
        for (int i = 0; i < n; i++) {
            Reading reading = readings.get(i);
            CarWindow car = cars.computeIfAbsent(reading.carId(),
                    id -> CarWindow.of(windows.get(id), model.window, model.featureCount()));
            suppressed[i] = car.push(reading.seq(), reading.hashed(), reading.failed(), reading.row(), batch, i * size);
        }
        long started = System.nanoTime();
        float[] probabilities = model.predict(batch, n);
        Metrics.MODEL_LATENCY.observe((System.nanoTime() - started) / 1e9);
        Metrics.BATCH_SIZE.observe(n);
        double threshold = threshold(model);
        long predictedAt = System.currentTimeMillis();
        GenericData.Record prediction = new GenericData.Record(encoder.schema());
        for (int i = 0; i < n; i++) {
            Reading reading = readings.get(i);
            double probability = probabilities[i];
            boolean above = probability >= threshold;
            boolean alert = above && !suppressed[i];
            OodScorer.Score ood = model.ood.score(reading.row(), reading.outOfRange(), reading.missing());
            prediction.put("car_id", reading.carId());
            prediction.put("seq", reading.seq());
            prediction.put("event_time", reading.eventTime());
            prediction.put("predicted_at", predictedAt);
            prediction.put("failure_probability", probability);
            prediction.put("failure_predicted", alert);
            prediction.put("model_version", model.version);
            prediction.put("horizon", model.horizon);
            prediction.put("ood_score", ood.score());
            prediction.put("out_of_distribution", ood.flagged());
            prediction.put("ood_features", ood.features());
            prediction.put("alert_suppressed", above && suppressed[i]);
            byte[] key = reading.carId().getBytes(StandardCharsets.UTF_8);
            context.forward(new Record<>(key, encoder.encode(prediction), predictedAt), PREDICTIONS_SINK);
            Metrics.END_TO_END.observe((predictedAt - reading.eventTime()) / 1000.0);
            Metrics.OOD_SCORE.observe(ood.score());
            if (alert) {
                Metrics.ALERTS.inc();
            } else if (above) {
                Metrics.ALERTS_SUPPRESSED.inc();
            }
            if (ood.flagged()) {
                Metrics.OOD.inc();
                ood.features().forEach(feature -> Metrics.OOD_FEATURES.labelValues(feature).inc());
            }
        }
        Metrics.PREDICTIONS.inc(n);
        cars.forEach((id, car) -> windows.put(id, car.bytes()));
    }

    /** The DLQ record of common/dlq.py: the original bytes, the car's key, and the contract's headers. */
    private void deadLetter(Pending record, String reason) {
        RecordHeaders headers = new RecordHeaders();
        String detail = reason.length() > DLQ_DETAIL_LIMIT ? reason.substring(0, DLQ_DETAIL_LIMIT) : reason;
        headers.add("error", UNDECODABLE.getBytes(StandardCharsets.UTF_8));
        headers.add("error_detail", detail.getBytes(StandardCharsets.UTF_8));
        headers.add("service", SERVICE.getBytes(StandardCharsets.UTF_8));
        headers.add("received_at",
                OffsetDateTime.now(ZoneOffset.UTC).format(ISO_MILLIS).getBytes(StandardCharsets.UTF_8));
        headers.add("source_topic", settings.topic().getBytes(StandardCharsets.UTF_8));
        headers.add("source_partition", Integer.toString(record.partition()).getBytes(StandardCharsets.UTF_8));
        headers.add("source_offset", Long.toString(record.offset()).getBytes(StandardCharsets.UTF_8));
        byte[] value = record.value() == null ? new byte[0] : record.value();
        if (value.length > DLQ_VALUE_LIMIT) {
            headers.add("payload_truncated_from", Integer.toString(value.length).getBytes(StandardCharsets.UTF_8));
            value = java.util.Arrays.copyOf(value, DLQ_VALUE_LIMIT);
        }
        log.warn("record {}[{}]@{} cannot be decoded ({}); sent to {}", settings.topic(), record.partition(),
                record.offset(), reason, settings.dlqTopic());
        context.forward(new Record<>(record.key(), value, System.currentTimeMillis(), headers), DLQ_SINK);
        Metrics.DLQ.inc();
    }
}
