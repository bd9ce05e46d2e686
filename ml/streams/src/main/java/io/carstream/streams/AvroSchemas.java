package io.carstream.streams;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;

/**
 * The repository's Avro schemas (schemas/, packed as resources): the current version of each and the earlier ones
 * kept in schemas/previous/ (NAME.v1.avsc, NAME.v2.avsc, ...), which still decode. common/avro.py reads the same files.
 */
final class AvroSchemas {
    static final String READING = "car_sensor_reading";
    static final String PREDICTION = "car_failure_prediction";
    static final byte[] SINGLE_OBJECT_MAGIC = {(byte) 0xC3, 0x01};
    static final byte CONFLUENT_MAGIC = 0;

    private AvroSchemas() {}

    static Schema current(String name) {
        Schema schema = read("schemas/" + name + ".avsc");
        if (schema == null) {
            throw new IllegalStateException("schema " + name + " is not packed in the jar");
        }
        return schema;
    }

    /** Every version of a schema, newest first: the current one, then schemas/previous/ from the highest number. */
    static List<Schema> versions(String name) {
        List<Schema> previous = new ArrayList<>();
        for (int v = 1; ; v++) {
            Schema schema = read("schemas/previous/" + name + ".v" + v + ".avsc");
            if (schema == null) {
                break;
            }
            previous.add(0, schema);
        }
        List<Schema> all = new ArrayList<>();
        all.add(current(name));
        all.addAll(previous);
        return all;
    }

    /** The 10-byte single-object header of a schema: C3 01, then its CRC-64-AVRO fingerprint, little-endian. */
    static byte[] singleObjectHeader(Schema schema) {
        ByteBuffer header = ByteBuffer.allocate(10).order(ByteOrder.LITTLE_ENDIAN);
        header.put(SINGLE_OBJECT_MAGIC).putLong(SchemaNormalization.parsingFingerprint64(schema));
        return header.array();
    }

    private static Schema read(String resource) {
        try (InputStream in = AvroSchemas.class.getClassLoader().getResourceAsStream(resource)) {
            return in == null ? null : new Schema.Parser().parse(in);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
