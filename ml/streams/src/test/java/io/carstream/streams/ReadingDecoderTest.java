package io.carstream.streams;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;
import org.junit.jupiter.api.Test;

/**
 * Null sensors as ml/features.py and ml/ood.py handle them: a version 2 record decodes with its peaks null, and a
 * model feature the reading lacks takes its training mean and is flagged out of distribution, named.
 */
class ReadingDecoderTest {
    private static final List<String> FEATURES = List.of("speed", "accelerometer_1_1_peak", "accelerometer_1_1_value");
    private static final double[] MEAN = {80.0, 4.5, 1.25};

    /** A reading of `schema` (the current one or an earlier version) in single-object encoding. */
    private static byte[] reading(Schema schema, Double peak) throws Exception {
        GenericData.Record record = new GenericData.Record(schema);
        for (Schema.Field field : schema.getFields()) {
            Schema type = field.schema();
            if (type.getType() == Schema.Type.UNION) {
                type = type.getTypes().get(1); // null first: the other branch
            }
            Object value = switch (type.getType()) {
                case STRING -> "car-00001";
                case LONG -> 7L;
                case INT -> 31;
                case DOUBLE -> 2.5;
                case BOOLEAN -> false;
                case ARRAY -> List.of();
                case ENUM -> new GenericData.EnumSymbol(type, "SENDER");
                default -> throw new IllegalStateException(field.name());
            };
            record.put(field.name(), value);
        }
        if (schema.getField("accelerometer_1_1_peak") != null) {
            record.put("accelerometer_1_1_peak", peak);
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(AvroSchemas.singleObjectHeader(schema));
        BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(out, null);
        new GenericDatumWriter<GenericRecord>(schema).write(record, encoder);
        encoder.flush();
        return out.toByteArray();
    }

    @Test
    void aVersion2RecordHasNoPeakAndTheModelSeesItsTrainingMean() throws Exception {
        ReadingDecoder decoder = new ReadingDecoder(Optional.empty());
        List<Schema> versions = AvroSchemas.versions(AvroSchemas.READING);
        Schema v2 = versions.get(1);
        assertNull(v2.getField("accelerometer_1_1_peak"));
        GenericRecord old = decoder.decode(reading(v2, null));
        assertNull(old.get("accelerometer_1_1_peak"));
        List<String> missing = new ArrayList<>();
        float[] row = ReadingDecoder.row(old, FEATURES, MEAN, missing, "test");
        assertArrayEquals(new float[] {2.5f, 4.5f, 2.5f}, row);
        assertEquals(List.of("accelerometer_1_1_peak"), missing);

        OodScorer ood = OodScorer.fromMetadata(new ObjectMapper().readTree("{}"), FEATURES, 1.0, "test");
        assertEquals(new OodScorer.Score(0.0, List.of("accelerometer_1_1_peak")), ood.score(row, List.of(), missing));
    }

    @Test
    void aReportedPeakIsUsedAsItIs() throws Exception {
        ReadingDecoder decoder = new ReadingDecoder(Optional.empty());
        GenericRecord current = decoder.decode(reading(AvroSchemas.current(AvroSchemas.READING), 9.75));
        List<String> missing = new ArrayList<>();
        assertArrayEquals(new float[] {2.5f, 9.75f, 2.5f}, ReadingDecoder.row(current, FEATURES, MEAN, missing, "t"));
        assertEquals(List.of(), missing);
    }

    @Test
    void aFeatureTheSchemaDoesNotHoldCannotBeScored() throws Exception {
        GenericRecord current = new ReadingDecoder(Optional.empty())
                .decode(reading(AvroSchemas.current(AvroSchemas.READING), 1.0));
        ReadingDecoder.DecodeError error = assertThrows(ReadingDecoder.DecodeError.class,
                () -> ReadingDecoder.row(current, List.of("vin"), new double[] {0}, new ArrayList<>(), "m7"));
        assertEquals("the reading has no numeric vin, a feature of model m7", error.getMessage());
    }
}
