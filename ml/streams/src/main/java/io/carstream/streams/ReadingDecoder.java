package io.carstream.streams;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;

/**
 * Readings in both framings the Python side reads (common/avro.py), written with any kept version of the schema:
 *
 * <ul>
 *   <li>single-object encoding: C3 01, the writer schema's 8-byte CRC-64-AVRO fingerprint (little-endian), body
 *       (or the fingerprint byte-reversed, as the Python side wrote it before issue 27);
 *   <li>Confluent framing: 00, a 4-byte big-endian schema id, body; the registry names the writer schema, and without
 *       one the newest local version that reads the body whole is taken (this stack only writes schemas/).
 * </ul>
 *
 * Each record is resolved to the current version, so fields added later take their defaults: an accelerometer peak
 * (since version 3) is null in a version 1 or 2 record. {@link #row} turns a record into a model's feature row.
 */
final class ReadingDecoder {
    /** Why a record cannot be decoded: the DLQ's error_detail. */
    static final class DecodeError extends Exception {
        DecodeError(String message) {
            super(message);
        }
    }

    static final String CONTENT_HASH = "CONTENT_HASH";

    private final Schema current = AvroSchemas.current(AvroSchemas.READING);
    private final Map<Long, GenericDatumReader<GenericRecord>> byFingerprint = new LinkedHashMap<>();
    private final List<GenericDatumReader<GenericRecord>> newestFirst = new ArrayList<>();
    private final Map<Integer, GenericDatumReader<GenericRecord>> byId = new LinkedHashMap<>();
    private final Optional<SchemaRegistry> registry;
    private BinaryDecoder reuse;

    ReadingDecoder(Optional<SchemaRegistry> registry) {
        this.registry = registry;
        Map<Long, GenericDatumReader<GenericRecord>> legacy = new LinkedHashMap<>();
        for (Schema writer : AvroSchemas.versions(AvroSchemas.READING)) {
            GenericDatumReader<GenericRecord> reader = new GenericDatumReader<>(writer, current);
            long fingerprint = SchemaNormalization.parsingFingerprint64(writer);
            byFingerprint.put(fingerprint, reader);
            newestFirst.add(reader);
            // The Python side wrote the fingerprint's bytes reversed until this reader found no schema for them
            // (common/avro.py, legacy_single_object_header): records already on the topics still decode.
            legacy.put(Long.reverseBytes(fingerprint), reader);
        }
        legacy.forEach(byFingerprint::putIfAbsent);
    }

    Schema schema() {
        return current;
    }

    /**
     * A reading's feature row in `features` order, as ml/serving/batch.py builds it (ml/features.py): a null feature
     * (not reported, such as the peaks of a version 2 record) takes its training mean from `mean` and is added to
     * `missing`; anything else that is not a number cannot be scored.
     */
    static float[] row(GenericRecord record, List<String> features, double[] mean, List<String> missing,
            String model) throws DecodeError {
        float[] row = new float[features.size()];
        for (int f = 0; f < row.length; f++) {
            String name = features.get(f);
            Schema.Field field = record.getSchema().getField(name);
            Object value = field == null ? null : record.get(field.pos());
            if (value instanceof Number number) {
                row[f] = (float) number.doubleValue();
            } else if (value == null && field != null) {
                row[f] = (float) mean[f];
                missing.add(name);
            } else {
                throw new DecodeError("the reading has no numeric " + name + ", a feature of model " + model);
            }
        }
        return row;
    }

    GenericRecord decode(byte[] data) throws DecodeError, SchemaRegistry.Unavailable {
        if (data == null || data.length < 5) {
            throw new DecodeError("value too short for Avro framing (" + (data == null ? 0 : data.length) + " bytes)");
        }
        if (data[0] == AvroSchemas.SINGLE_OBJECT_MAGIC[0] && data[1] == AvroSchemas.SINGLE_OBJECT_MAGIC[1]) {
            if (data.length < 10) {
                throw new DecodeError("value too short for a single-object header (" + data.length + " bytes)");
            }
            long fingerprint = ByteBuffer.wrap(data, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
            GenericDatumReader<GenericRecord> reader = byFingerprint.get(fingerprint);
            if (reader == null) {
                throw new DecodeError("single-object fingerprint " + HexFormat.of().formatHex(data, 2, 10)
                        + " is no version of the " + AvroSchemas.READING + " schema");
            }
            return read(reader, data, 10, false); // as fastavro: trailing bytes are not checked
        }
        if (data[0] == AvroSchemas.CONFLUENT_MAGIC) {
            if (registry.isPresent()) {
                return read(registered(ByteBuffer.wrap(data, 1, 4).getInt()), data, 5, false);
            }
            DecodeError failure = null;
            for (GenericDatumReader<GenericRecord> reader : newestFirst) {
                try {
                    return read(reader, data, 5, true);
                } catch (DecodeError e) {
                    failure = e;
                }
            }
            throw new DecodeError("no version of the " + AvroSchemas.READING
                    + " schema reads this Confluent-framed body (" + failure.getMessage() + ")");
        }
        throw new DecodeError("unknown framing: first bytes " + HexFormat.of().formatHex(data, 0, 2)
                + " are neither c301 nor 00");
    }

    private GenericDatumReader<GenericRecord> registered(int id) throws DecodeError, SchemaRegistry.Unavailable {
        GenericDatumReader<GenericRecord> reader = byId.get(id);
        if (reader == null) {
            try {
                reader = new GenericDatumReader<>(registry.orElseThrow().schema(id), current);
            } catch (SchemaRegistry.Unknown e) {
                throw new DecodeError(e.getMessage());
            } catch (RuntimeException e) {
                throw new DecodeError("schema id " + id + " does not read as a " + AvroSchemas.READING + ": " + e);
            }
            byId.put(id, reader);
        }
        return reader;
    }

    private GenericRecord read(GenericDatumReader<GenericRecord> reader, byte[] data, int offset, boolean whole)
            throws DecodeError {
        try {
            reuse = DecoderFactory.get().binaryDecoder(data, offset, data.length - offset, reuse);
            GenericRecord record = reader.read(null, reuse);
            if (whole && !reuse.isEnd()) {
                throw new DecodeError("corrupt Avro body: " + (data.length - offset) + " bytes hold more than one "
                        + AvroSchemas.READING);
            }
            return record;
        } catch (IOException | RuntimeException e) {
            throw new DecodeError("corrupt Avro body: " + e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }
}
