package io.carstream.streams;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;

import org.junit.jupiter.api.Test;

/** The window rules of ml/serving/ring_buffer.py, which the parity test proves end to end against the Python side. */
class CarWindowTest {
    private static final int W = 3;

    private static float[] row(float value) {
        return new float[] {value, -value};
    }

    /** The window ending at the reading, as the car's first feature of each of its W rows. */
    private static float[] push(CarWindow car, long seq, boolean hashed, float value) {
        float[] out = new float[W * 2];
        car.push(seq, hashed, false, row(value), out, 0);
        float[] firsts = new float[W];
        for (int i = 0; i < W; i++) {
            firsts[i] = out[i * 2];
        }
        return firsts;
    }

    @Test
    void aNewCarIsPaddedWithItsFirstReadingThenSlides() {
        CarWindow car = new CarWindow(W, 2);
        assertArrayEquals(new float[] {1, 1, 1}, push(car, 0, false, 1));
        assertArrayEquals(new float[] {1, 1, 2}, push(car, 1, false, 2));
        assertArrayEquals(new float[] {1, 2, 3}, push(car, 2, false, 3));
        assertArrayEquals(new float[] {2, 3, 4}, push(car, 5, false, 4)); // a gap is not cut out
    }

    @Test
    void aDuplicateIsPredictedOnTheCurrentWindowAndNotStoredAgain() {
        CarWindow car = new CarWindow(W, 2);
        push(car, 0, false, 1);
        push(car, 1, false, 2);
        assertArrayEquals(new float[] {1, 1, 2}, push(car, 1, false, 99));
        assertEquals(2, car.readings());
    }

    @Test
    void aSeqFarBelowTheLastOneStartsTheCarAgain() {
        CarWindow car = new CarWindow(W, 2);
        for (int seq = 10; seq < 15; seq++) {
            push(car, seq, false, seq);
        }
        assertArrayEquals(new float[] {7, 7, 7}, push(car, 0, false, 7));
        assertEquals(1, car.readings());
    }

    @Test
    void contentHashesAreIdentitiesNotAnOrder() {
        CarWindow car = new CarWindow(W, 2);
        push(car, 900, true, 1);
        assertArrayEquals(new float[] {1, 1, 2}, push(car, 5, true, 2)); // lower than 900: still new
        assertArrayEquals(new float[] {1, 1, 2}, push(car, 900, true, 3)); // the same payload again
        assertEquals(2, car.readings());
    }

    @Test
    void theStoredBytesGiveTheSameCarAndAnotherShapeStartsAnew() {
        CarWindow car = new CarWindow(W, 2);
        push(car, 0, false, 1);
        push(car, 1, false, 2);
        CarWindow restored = CarWindow.of(car.bytes(), W, 2);
        assertArrayEquals(new float[] {1, 2, 3}, push(restored, 2, false, 3));
        assertEquals(0, CarWindow.of(car.bytes(), W + 1, 2).readings());
    }

    private static boolean suppressed(CarWindow car, long seq, boolean failed) {
        return car.push(seq, false, failed, row(seq), new float[W * 2], 0);
    }

    @Test
    void aFailureAndTheWReadingsAfterItAreSuppressedAndTheStoreKeepsIt() {
        CarWindow car = new CarWindow(W, 2);
        assertFalse(suppressed(car, 0, false));
        assertTrue(suppressed(car, 1, true));
        assertTrue(suppressed(car, 2, false));
        assertTrue(suppressed(car, 1, false)); // a duplicate: the car's current reading
        CarWindow restored = CarWindow.of(car.bytes(), W, 2);
        assertTrue(suppressed(restored, 3, false));
        assertTrue(suppressed(restored, 4, false)); // the W-th reading after the failure
        assertFalse(suppressed(restored, 5, false));
    }

    @Test
    void aStoredValueWrittenBeforeTheFailureCountMeansNoFailureWithinW() {
        CarWindow car = new CarWindow(W, 2);
        suppressed(car, 0, true);
        byte[] bytes = car.bytes();
        CarWindow old = CarWindow.of(Arrays.copyOf(bytes, bytes.length - 8), W, 2);
        assertEquals(1, old.readings());
        assertFalse(suppressed(old, 1, false));
    }
}
