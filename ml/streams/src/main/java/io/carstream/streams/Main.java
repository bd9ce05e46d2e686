package io.carstream.streams;

import com.sun.net.httpserver.HttpServer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import sun.misc.Signal;

/** `java -jar car-failure-streams.jar`: see {@link Settings#help()} and ml/streams/README.md. */
public final class Main {
    private static final Logger log = LoggerFactory.getLogger(Main.class);
    static final String SOURCE = "readings";
    static final String PROCESSOR = "predict";

    private Main() {}

    public static void main(String[] args) {
        if (List.of(args).contains("--help") || List.of(args).contains("-h")) {
            System.out.print(Settings.help());
            return;
        }
        Settings settings;
        try {
            settings = Settings.parse(args, System.getenv());
        } catch (Settings.UsageError e) {
            System.err.println("error: " + e.getMessage());
            System.exit(2);
            return;
        }
        System.exit(run(settings));
    }

    static Topology topology(Settings settings, ModelWatcher models, Optional<SchemaRegistry> registry) {
        Topology topology = new Topology();
        topology.addSource(SOURCE, new ByteArrayDeserializer(), new ByteArrayDeserializer(), settings.topic());
        PendingRecovery recovery = new PendingRecovery(settings);
        topology.addProcessor(PROCESSOR, () -> new PredictProcessor(settings, models, new ReadingDecoder(registry),
                new PredictionEncoder(registry, settings.outputTopic()), recovery), SOURCE);
        topology.addStateStore(PredictProcessor.windowsStore(), PROCESSOR);
        topology.addStateStore(PredictProcessor.pendingStore(), PROCESSOR);
        topology.addSink(PredictProcessor.PREDICTIONS_SINK, settings.outputTopic(), new ByteArraySerializer(),
                new ByteArraySerializer(), PROCESSOR);
        topology.addSink(PredictProcessor.DLQ_SINK, settings.dlqTopic(), new ByteArraySerializer(),
                new ByteArraySerializer(), PROCESSOR);
        return topology;
    }

    static Properties streamsConfig(Settings settings) {
        Properties props = new Properties();
        props.putAll(settings.security());
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, settings.applicationId());
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, settings.bootstrapServers());
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.STATE_DIR_CONFIG, Path.of(settings.stateDir()).toAbsolutePath().toString());
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, settings.commitIntervalMs());
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, settings.streamThreads());
        props.put(StreamsConfig.NUM_STANDBY_REPLICAS_CONFIG, settings.standbyReplicas());
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), settings.sessionTimeoutMs());
        settings.instanceId().ifPresent(id -> props.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), id));
        // the windows' changelog carries W x F floats per reading: compressed, it costs the broker a third
        props.put(StreamsConfig.producerPrefix(ProducerConfig.COMPRESSION_TYPE_CONFIG), "lz4");
        return props;
    }

    static int run(Settings settings) {
        log.info("serving {} from {} to {} (DLQ {}), Kafka {} as {}, {} framing, state in {}", settings.topic(),
                settings.modelDir(), settings.outputTopic(), settings.dlqTopic(), settings.bootstrapServers(),
                settings.identity(), settings.schemaRegistryUrl().map(url -> "Confluent (" + url + ")")
                        .orElse("single-object"), settings.stateDir());
        CountDownLatch stop = new CountDownLatch(1);
        for (String signal : List.of("TERM", "INT")) {
            Signal.handle(new Signal(signal), s -> {
                log.info("SIG{} received: stopping (the current transaction is committed first)", signal);
                stop.countDown();
            });
        }
        ModelWatcher models = new ModelWatcher(Path.of(settings.modelDir()), settings.oodThreshold(),
                settings.modelThreads(), settings.reloadInterval());
        AtomicReference<KafkaStreams> running = new AtomicReference<>();
        HttpServer server = null;
        try {
            if (settings.metricsPort() > 0) {
                server = Metrics.serve(settings.metricsHost(), settings.metricsPort(),
                        () -> liveness(running.get(), settings), () -> readiness(running.get(), models));
            }
            Thread waiting = new Thread(() -> {
                if (models.waitFirst() && waitForTopics(settings, stop)) {
                    start(settings, models, running, stop);
                }
            }, "start");
            waiting.setDaemon(true);
            waiting.start();
            stop.await();
            KafkaStreams streams = running.get();
            boolean failed = streams != null && streams.state() == KafkaStreams.State.ERROR;
            if (streams != null) {
                streams.close(Duration.ofSeconds(30));
            }
            log.info("stopped{}", failed ? " after a fatal error" : "");
            return failed ? 1 : 0;
        } catch (Exception e) {
            log.error("cannot serve: {}", e.toString());
            return 1;
        } finally {
            models.close();
            if (server != null) {
                server.stop(0);
            }
        }
    }

    private static void start(Settings settings, ModelWatcher models, AtomicReference<KafkaStreams> running,
            CountDownLatch stop) {
        Optional<SchemaRegistry> registry = settings.schemaRegistryUrl().map(SchemaRegistry::new);
        KafkaStreams streams = new KafkaStreams(topology(settings, models, registry), streamsConfig(settings));
        streams.setUncaughtExceptionHandler(error -> {
            log.error("processing failed; stopping (uncommitted work is redone by the next start)", error);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> {
            log.info("Kafka Streams {} -> {}", before, now);
            if (now == KafkaStreams.State.ERROR) {
                stop.countDown();
            }
        });
        running.set(streams);
        streams.start();
    }

    /**
     * Kafka Streams stops at once when a topic is missing: wait for the readings topic, and create the predictions
     * topic (as many partitions as the readings') and the DLQ (one) when they are missing, as the Python predictor
     * does. An identity without the right to create them waits for them instead (secured mode: `car-admin apply`).
     */
    private static boolean waitForTopics(Settings settings, CountDownLatch stop) {
        Properties props = new Properties();
        props.putAll(settings.security());
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, settings.bootstrapServers());
        long logged = 0;
        try (Admin admin = Admin.create(props)) {
            while (stop.getCount() > 0) {
                String problem;
                try {
                    int partitions = admin.describeTopics(List.of(settings.topic())).allTopicNames()
                            .get(10, TimeUnit.SECONDS).get(settings.topic()).partitions().size();
                    Set<String> existing = admin.listTopics().names().get(10, TimeUnit.SECONDS);
                    List<NewTopic> missing = new ArrayList<>();
                    if (!existing.contains(settings.outputTopic())) {
                        missing.add(new NewTopic(settings.outputTopic(), Optional.of(partitions), Optional.empty()));
                    }
                    if (!existing.contains(settings.dlqTopic())) {
                        missing.add(new NewTopic(settings.dlqTopic(), Optional.of(1), Optional.empty()));
                    }
                    for (var created : admin.createTopics(missing).values().entrySet()) {
                        try {
                            created.getValue().get(30, TimeUnit.SECONDS);
                            log.info("created topic {}", created.getKey());
                        } catch (ExecutionException e) {
                            if (!(e.getCause() instanceof TopicExistsException)) {
                                throw e;
                            }
                        }
                    }
                    return true;
                } catch (ExecutionException e) {
                    problem = e.getCause() instanceof UnknownTopicOrPartitionException
                            ? "topic " + settings.topic() + " does not exist" : String.valueOf(e.getCause());
                } catch (java.util.concurrent.TimeoutException e) {
                    problem = "Kafka does not answer";
                }
                if (System.currentTimeMillis() - logged > 30_000) {
                    log.warn("waiting for the topics on {}: {}", settings.bootstrapServers(), problem);
                    logged = System.currentTimeMillis();
                }
                stop.await(1, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return false;
    }

    private static String liveness(KafkaStreams streams, Settings settings) {
        if (streams == null) {
            return null; // waiting for the first model or the topics is no hang
        }
        KafkaStreams.State state = streams.state();
        if (state == KafkaStreams.State.ERROR || state == KafkaStreams.State.PENDING_ERROR) {
            return "Kafka Streams is in state " + state;
        }
        long now = System.currentTimeMillis();
        long stalled = (long) (settings.stallSeconds() * 1000);
        for (var turn : PredictProcessor.LAST_TURN.entrySet()) {
            if (now - turn.getValue() > stalled) {
                return "task " + turn.getKey() + " has not turned for " + (now - turn.getValue()) / 1000 + " s";
            }
        }
        return null;
    }

    private static String readiness(KafkaStreams streams, ModelWatcher models) {
        if (models.current() == null) {
            return "no model loaded yet";
        }
        if (streams == null) {
            return "waiting for the topics";
        }
        return streams.state() == KafkaStreams.State.RUNNING ? null : "Kafka Streams is " + streams.state();
    }
}
