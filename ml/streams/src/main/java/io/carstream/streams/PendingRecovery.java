package io.carstream.streams;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * The readings a task had taken (their offsets committed) but not predicted when its previous owner died: every
 * record of its partition from the first unpredicted one (the pending store's entry) up to the group's committed
 * offset, read again from the readings topic. Both were committed in one transaction, so the range is exact.
 */
final class PendingRecovery {
    private static final Duration LIMIT = Duration.ofSeconds(120);
    private final Settings settings;

    PendingRecovery(Settings settings) {
        this.settings = settings;
    }

    /** A readings-topic record: where it came from (for the DLQ), its key and its value. */
    record Pending(int partition, long offset, byte[] key, byte[] value) {}

    List<Pending> read(int partition, long first) {
        TopicPartition tp = new TopicPartition(settings.topic(), partition);
        long end = committed(tp);
        List<Pending> found = new ArrayList<>();
        Properties props = new Properties();
        props.putAll(settings.security());
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, settings.bootstrapServers());
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, settings.applicationId() + "-recovery-" + partition);
        try (KafkaConsumer<byte[], byte[]> consumer =
                new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            consumer.assign(List.of(tp));
            consumer.seek(tp, first);
            long deadline = System.nanoTime() + LIMIT.toNanos();
            while (consumer.position(tp) < end) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("could not read " + tp + " from " + first + " to " + end
                            + " within " + LIMIT.toSeconds() + " s");
                }
                for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(500))) {
                    if (record.offset() < end) {
                        found.add(new Pending(partition, record.offset(), record.key(), record.value()));
                    }
                }
            }
        }
        return found;
    }

    private long committed(TopicPartition tp) {
        Properties props = new Properties();
        props.putAll(settings.security());
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, settings.bootstrapServers());
        try (Admin admin = Admin.create(props)) {
            Map<TopicPartition, OffsetAndMetadata> offsets = admin.listConsumerGroupOffsets(settings.applicationId())
                    .partitionsToOffsetAndMetadata().get(60, TimeUnit.SECONDS);
            OffsetAndMetadata committed = offsets.get(tp);
            if (committed == null) {
                throw new IllegalStateException("a pending range of " + tp + " without a committed offset");
            }
            return committed.offset();
        } catch (ExecutionException | TimeoutException e) {
            throw new IllegalStateException("cannot read the committed offset of " + tp + ": " + e, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }
}
