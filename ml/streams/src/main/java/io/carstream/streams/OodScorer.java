package io.carstream.streams;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * How far a reading lies outside the training cars' range, as ml/ood.py computes it (that file explains why):
 *
 * <pre>
 * distance_f = max(0, x_f - max_f, min_f - x_f) / width_f     width_f = max(max_f - min_f, 0.01 * max(|min_f|, |max_f|, 1))
 * ood_score  = max over f of distance_f (1e9 for NaN or an infinity)
 * out_of_distribution = some distance above the threshold, or a model feature in the reading's out_of_range,
 *                       or a model feature the reading lacks (null: scored at its training mean, flagged always)
 * </pre>
 *
 * x is the float32 value the model sees, widened to double, as the Python side scores it.
 */
final class OodScorer {
    private static final Logger log = LoggerFactory.getLogger(OodScorer.class);
    static final double MIN_WIDTH = 0.01;
    static final double NON_FINITE = 1e9;

    /** A reading's score, and the features beyond the threshold in the model's order (empty when not flagged). */
    record Score(double score, List<String> features) {
        boolean flagged() {
            return !features.isEmpty();
        }
    }

    private final List<String> names;
    private final double[] low;
    private final double[] high;
    private final double[] width;
    private final double threshold;

    private OodScorer(List<String> names, double[] low, double[] high, double threshold) {
        this.names = names;
        this.low = low;
        this.high = high;
        this.threshold = threshold;
        if (low == null) {
            this.width = null;
            return;
        }
        this.width = new double[names.size()];
        for (int f = 0; f < width.length; f++) {
            double magnitude = Math.max(Math.abs(low[f]), Math.abs(high[f]));
            width[f] = Math.max(high[f] - low[f], MIN_WIDTH * Math.max(magnitude, 1.0));
        }
    }

    static OodScorer fromMetadata(JsonNode meta, List<String> names, double threshold, String version) {
        JsonNode stats = meta.path("feature_stats").path("features");
        double[] low = new double[names.size()];
        double[] high = new double[names.size()];
        for (int f = 0; f < names.size(); f++) {
            JsonNode feature = stats.path(names.get(f));
            if (!feature.has("min") || !feature.has("max")) {
                log.warn("model {} keeps no training statistics (trained before they existed): its predictions get "
                        + "ood_score 0 and are never flagged out of distribution; retrain it to score them", version);
                return new OodScorer(names, null, null, threshold);
            }
            low[f] = feature.get("min").asDouble();
            high[f] = feature.get("max").asDouble();
        }
        return new OodScorer(names, low, high, threshold);
    }

    /** The score of one reading's row (model order); `outOfRange`: the fields the bridge found implausible. */
    Score score(float[] row, List<String> outOfRange) {
        return score(row, outOfRange, List.of());
    }

    /**
     * The same, `missing` naming the model features the reading lacks (ReadingDecoder.row filled them with their
     * training mean): they are flagged whatever the scorer, as ml/ood.py flags them.
     */
    Score score(float[] row, List<String> outOfRange, List<String> missing) {
        boolean[] outside = new boolean[row.length];
        for (String field : missing) {
            int f = names.indexOf(field);
            if (f >= 0) {
                outside[f] = true;
            }
        }
        double score = 0.0;
        if (low != null) {
            for (int f = 0; f < row.length; f++) {
                double value = row[f];
                double distance = Double.isFinite(value)
                        ? Math.max(Math.max(value - high[f], low[f] - value), 0.0) / width[f]
                        : NON_FINITE;
                score = Math.max(score, distance);
                outside[f] |= distance > threshold;
            }
            for (String field : outOfRange) {
                int f = names.indexOf(field);
                if (f >= 0) {
                    outside[f] = true;
                }
            }
        }
        List<String> flagged = new ArrayList<>();
        for (int f = 0; f < outside.length; f++) {
            if (outside[f]) {
                flagged.add(names.get(f));
            }
        }
        return new Score(score, flagged);
    }
}
