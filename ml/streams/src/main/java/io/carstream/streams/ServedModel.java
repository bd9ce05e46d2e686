package io.carstream.streams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.tensorflow.Result;
import org.tensorflow.SavedModelBundle;
import org.tensorflow.SessionFunction;
import org.tensorflow.ndarray.Shape;
import org.tensorflow.ndarray.buffer.DataBuffers;
import org.tensorflow.proto.ConfigProto;
import org.tensorflow.types.TFloat32;

/**
 * One version of the model artifact (ml/artifact.py), loaded through its SavedModel contract: `serving_default` takes
 * `windows` [batch, W, F] float32 of raw readings in metadata.json's feature order and returns `failure_probability`
 * [batch]. Scaling and calibration are inside the model, so nothing of them is restated here. Also the threshold,
 * the horizon and the training range that out-of-distribution scores are measured against (ml/ood.py).
 */
final class ServedModel implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ServedModel.class);
    static final String INPUT = "windows";
    static final String OUTPUT = "failure_probability";
    /** Windows per signature call: bounds one call's memory (artifact.SIGNATURE_BATCH). */
    static final int SIGNATURE_BATCH = 4096;

    final String version;
    final Path path;
    final int window;
    final int horizon;
    final double threshold;
    final List<String> features;
    /** The training mean of each feature (metadata's scaling.mean): the value of one a reading lacks. */
    final double[] mean;
    final OodScorer ood;
    private final SavedModelBundle bundle;
    private final SessionFunction signature;

    private ServedModel(Path path, JsonNode meta, SavedModelBundle bundle, double oodThreshold) {
        this.path = path;
        this.version = meta.path("version").asText(path.getFileName().toString());
        this.window = meta.get("window").asInt();
        this.horizon = meta.get("horizon").asInt();
        this.threshold = meta.get("threshold").asDouble();
        List<String> names = new ArrayList<>();
        meta.get("features").forEach(name -> names.add(name.asText()));
        this.features = List.copyOf(names);
        this.mean = new double[features.size()];
        for (int f = 0; f < mean.length; f++) {
            mean[f] = meta.path("scaling").path("mean").path(f).asDouble();
        }
        this.ood = OodScorer.fromMetadata(meta, features, oodThreshold, version);
        this.bundle = bundle;
        this.signature = bundle.function("serving_default");
    }

    static ServedModel load(Path path, double oodThreshold, int threads) throws IOException {
        JsonNode meta = new ObjectMapper().readTree(Files.readString(path.resolve("metadata.json")));
        for (String key : List.of("window", "horizon", "features", "threshold")) {
            if (!meta.has(key)) {
                throw new IOException(path.resolve("metadata.json") + " lacks " + key);
            }
        }
        Path saved = path.resolve("saved_model");
        if (!Files.isDirectory(saved)) {
            throw new IOException(path + " lacks saved_model/");
        }
        SavedModelBundle.Loader loader = SavedModelBundle.loader(saved.toString()).withTags("serve");
        if (threads > 0) {
            loader = loader.withConfigProto(ConfigProto.newBuilder()
                    .setIntraOpParallelismThreads(threads)
                    .setInterOpParallelismThreads(threads)
                    .build());
        }
        SavedModelBundle bundle = loader.load();
        try {
            return new ServedModel(path, meta, bundle, oodThreshold);
        } catch (RuntimeException e) {
            bundle.close();
            throw new IOException(path + " has no usable serving_default signature: " + e.getMessage(), e);
        }
    }

    int featureCount() {
        return features.size();
    }

    /** Probabilities of `n` windows laid out row-major in `windows` ([n, W, F]), in calls of SIGNATURE_BATCH. */
    float[] predict(float[] windows, int n) {
        float[] out = new float[n];
        int size = window * features.size();
        for (int start = 0; start < n; start += SIGNATURE_BATCH) {
            int count = Math.min(SIGNATURE_BATCH, n - start);
            float[] part = start == 0 && count * size == windows.length
                    ? windows
                    : Arrays.copyOfRange(windows, start * size, (start + count) * size);
            try (TFloat32 input = TFloat32.tensorOf(Shape.of(count, window, features.size()), DataBuffers.of(part, true, false));
                    Result result = signature.call(Map.of(INPUT, input))) {
                TFloat32 probabilities = (TFloat32) result.get(OUTPUT)
                        .orElseThrow(() -> new IllegalStateException("the signature returned no " + OUTPUT));
                probabilities.copyTo(DataBuffers.of(out, false, false).offset(start).narrow(count));
            }
        }
        return out;
    }

    /** One call at the largest batch: TensorFlow's first call, and its allocator's growth, are paid here. */
    long warmUpMillis() {
        long started = System.nanoTime();
        predict(new float[SIGNATURE_BATCH * window * features.size()], SIGNATURE_BATCH);
        return (System.nanoTime() - started) / 1_000_000;
    }

    @Override
    public void close() {
        bundle.close();
        log.info("model {} unloaded", version);
    }
}
