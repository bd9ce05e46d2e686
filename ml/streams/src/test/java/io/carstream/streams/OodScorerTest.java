package io.carstream.streams;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The score of ml/ood.py: widths of the training range beyond it, NaN far out, the bridge's flags. */
class OodScorerTest {
    private static final List<String> NAMES = List.of("volts", "amps");

    private static OodScorer scorer(String stats) throws Exception {
        return OodScorer.fromMetadata(new ObjectMapper().readTree(stats), NAMES, 1.0, "test");
    }

    @Test
    void scoresInWidthsOfTheTrainingRange() throws Exception {
        OodScorer ood = scorer("{\"feature_stats\": {\"features\": {\"volts\": {\"min\": 10, \"max\": 14},"
                + " \"amps\": {\"min\": 0, \"max\": 0}}}}");
        assertEquals(new OodScorer.Score(0.0, List.of()), ood.score(new float[] {12, 0}, List.of()));
        assertEquals(new OodScorer.Score(0.5, List.of()), ood.score(new float[] {16, 0}, List.of()));
        // a constant feature is given a width of 0.01: 0.05 above it is 5 widths out
        OodScorer.Score far = ood.score(new float[] {12, 0.05f}, List.of());
        assertEquals(List.of("amps"), far.features());
        assertEquals(OodScorer.NON_FINITE, ood.score(new float[] {Float.NaN, 0}, List.of()).score());
        assertEquals(List.of("volts"), ood.score(new float[] {12, 0}, List.of("volts", "speed")).features());
    }

    @Test
    void aModelWithoutStatisticsScoresNothing() throws Exception {
        OodScorer ood = scorer("{}");
        assertEquals(new OodScorer.Score(0.0, List.of()), ood.score(new float[] {1e9f, 0}, List.of("volts")));
    }
}
