package io.carstream.streams;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * One car's last W readings, as ml/serving/ring_buffer.py keeps them, so that both programs build the same windows:
 *
 * <ul>
 *   <li>reading number n of the car (0-based, in arrival order) lives in slot n % W; the window ending at a reading is
 *       the readings n-W+1 .. n, and a car with fewer than W readings is padded on the left with its first one;
 *   <li>a reading whose seq is not newer than the car's last one is a duplicate: predicted on the current window,
 *       not stored again; a seq more than W below the last one means the sender started again: history reset;
 *   <li>a content-hash seq (seq_origin CONTENT_HASH) is an identity, not an order: a duplicate when it equals one of
 *       the seqs held, and it never moves the car's last seq;
 *   <li>"the car told us" (ml/episodes.py): readings since the car's last reported failure, capped at W + 1, tell
 *       whether a reading is suppressed (a failure reported in it or in its previous W readings); a duplicate takes
 *       the car's current count, a car that starts again keeps it.
 * </ul>
 *
 * Its bytes are the value of the car's entry in the windows store (and so of its changelog topic): the window and
 * feature count first, so that a model of another shape starts the car empty rather than misread it. The count
 * since a failure comes last: a value written before it existed reads as "no failure within W".
 */
final class CarWindow {
    private final int window;
    private final int features;
    private long count;
    private long lastSeq = -1;
    private long sinceFailure;
    private final long[] seqs;
    private final float[] rows;

    CarWindow(int window, int features) {
        this.window = window;
        this.features = features;
        this.seqs = new long[window];
        this.rows = new float[window * features];
        this.sinceFailure = window + 1L;
    }

    /** The car's state from its store value; a fresh car when there is none or it has another shape. */
    static CarWindow of(byte[] stored, int window, int features) {
        CarWindow car = new CarWindow(window, features);
        if (stored == null) {
            return car;
        }
        ByteBuffer in = ByteBuffer.wrap(stored).order(ByteOrder.LITTLE_ENDIAN); // no byte swapping
        if (in.getInt() != window || in.getInt() != features) {
            return car;
        }
        car.count = in.getLong();
        car.lastSeq = in.getLong();
        in.asLongBuffer().get(car.seqs);
        in.position(in.position() + 8 * window);
        in.asFloatBuffer().get(car.rows);
        in.position(in.position() + 4 * window * features);
        if (in.remaining() >= 8) {
            car.sinceFailure = in.getLong();
        }
        return car;
    }

    byte[] bytes() {
        ByteBuffer out = ByteBuffer.allocate(8 + 16 + 8 * window + 4 * window * features + 8)
                .order(ByteOrder.LITTLE_ENDIAN);
        out.putInt(window).putInt(features).putLong(count).putLong(lastSeq);
        out.asLongBuffer().put(seqs);
        out.position(out.position() + 8 * window);
        out.asFloatBuffer().put(rows);
        out.position(out.position() + 4 * window * features);
        out.putLong(sinceFailure);
        return out.array();
    }

    long readings() {
        return count;
    }

    /**
     * Take a reading (its feature row in the model's order; `failed`: it reports a failure) and write the window ending
     * at it into `out` at `at`. Returns whether the reading is suppressed: the car reported a failure in it or in its
     * previous W readings.
     */
    boolean push(long seq, boolean hashed, boolean failed, float[] row, float[] out, int at) {
        if (!hashed && seq <= lastSeq - window) {
            count = 0;
            lastSeq = -1;
        }
        boolean fresh = hashed ? !recent(seq) : seq > lastSeq;
        if (fresh) {
            int slot = (int) (count % window);
            System.arraycopy(row, 0, rows, slot * features, features);
            seqs[slot] = seq;
            count++;
            if (!hashed) {
                lastSeq = seq;
            }
            sinceFailure = failed ? 0 : Math.min(sinceFailure + 1, window + 1L);
        }
        for (int i = 0; i < window; i++) {
            long number = Math.max(count - window + i, 0);
            int slot = (int) (number % window);
            System.arraycopy(rows, slot * features, out, at + i * features, features);
        }
        return failed || sinceFailure <= window;
    }

    private boolean recent(long seq) {
        long held = Math.min(count, window);
        for (int slot = 0; slot < held; slot++) {
            if (seqs[slot] == seq) {
                return true;
            }
        }
        return false;
    }
}
