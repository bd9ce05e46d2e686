package io.carstream.streams;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.util.Optional;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;

/**
 * Predictions in the current prediction schema, framed as the Python predictor frames them (common/avro.py):
 * single-object encoding without a registry, Confluent framing with the id the registry gives the schema under the
 * output topic's subject (`<topic>-value`) when one is configured.
 */
final class PredictionEncoder {
    private final Schema schema = AvroSchemas.current(AvroSchemas.PREDICTION);
    private final GenericDatumWriter<GenericRecord> writer = new GenericDatumWriter<>(schema);
    private final Optional<SchemaRegistry> registry;
    private final String subject;
    private byte[] header;
    private BinaryEncoder reuse;

    PredictionEncoder(Optional<SchemaRegistry> registry, String topic) {
        this.registry = registry;
        this.subject = topic + "-value";
        if (registry.isEmpty()) {
            header = AvroSchemas.singleObjectHeader(schema);
        }
    }

    Schema schema() {
        return schema;
    }

    /** The framing's header, asked of the registry on first use: raises Unavailable when it does not answer. */
    void connect() throws SchemaRegistry.Unavailable {
        if (header == null) {
            try {
                int id = registry.orElseThrow().register(subject, schema);
                header = ByteBuffer.allocate(5).put(AvroSchemas.CONFLUENT_MAGIC).putInt(id).array();
            } catch (SchemaRegistry.Unknown e) {
                throw new IllegalStateException("the registry refused the prediction schema: " + e.getMessage());
            }
        }
    }

    /** The framed record; `connect()` has succeeded before. */
    byte[] encode(GenericRecord prediction) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(160);
        out.writeBytes(header);
        try {
            reuse = EncoderFactory.get().binaryEncoder(out, reuse);
            writer.write(prediction, reuse);
            reuse.flush();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }
}
