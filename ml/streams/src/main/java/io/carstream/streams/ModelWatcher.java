package io.carstream.streams;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicReference;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Hot reload, as ml/serving/model_watcher.py does it: a thread looks for a newer version in the model folder, loads
 * and warms it up while the current one keeps serving, and hands it over; the processors take it between two
 * batches. Versions are sortable UTC times renamed into place only when complete (ml/artifact.py); one named more
 * than 10 minutes ahead of the clock is ignored, one that fails to load is logged and skipped.
 */
final class ModelWatcher implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ModelWatcher.class);
    private static final Pattern VERSION = Pattern.compile("^\\d{8}T\\d{6}Z$");
    private static final DateTimeFormatter FORMAT = DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'");
    private static final long MAX_CLOCK_AHEAD_S = 600;

    private final Path folder;
    private final double oodThreshold;
    private final int threads;
    private final AtomicReference<ServedModel> current = new AtomicReference<>();
    private ServedModel retired;
    private String seen = "";
    private final Thread thread;
    private volatile boolean stopped;

    ModelWatcher(Path folder, double oodThreshold, int threads, double intervalSeconds) {
        this.folder = folder;
        this.oodThreshold = oodThreshold;
        this.threads = threads;
        long interval = Math.max(10, (long) (intervalSeconds * 1000));
        this.thread = new Thread(() -> {
            while (!stopped) {
                try {
                    Thread.sleep(interval);
                } catch (InterruptedException e) {
                    return;
                }
                look();
            }
        }, "model-watcher");
        thread.setDaemon(true);
    }

    /** Blocks until a version loads (logging while there is none); false when interrupted. */
    boolean waitFirst() {
        long logged = 0;
        while (current.get() == null) {
            look();
            if (current.get() != null) {
                break;
            }
            if (System.currentTimeMillis() - logged > 30_000) {
                log.warn("no model in {} yet; waiting for `python -m ml train` to publish one", folder);
                logged = System.currentTimeMillis();
            }
            try {
                Thread.sleep(1000);
            } catch (InterruptedException e) {
                return false;
            }
        }
        thread.start();
        return true;
    }

    ServedModel current() {
        return current.get();
    }

    synchronized void look() {
        Optional<Path> newest = latest();
        if (newest.isEmpty() || newest.get().getFileName().toString().compareTo(seen) <= 0) {
            return;
        }
        Path path = newest.get();
        seen = path.getFileName().toString();
        ServedModel model;
        long warmUp;
        try {
            model = ServedModel.load(path, oodThreshold, threads);
            warmUp = model.warmUpMillis();
        } catch (IOException | RuntimeException e) { // a broken artifact must not stop serving the current one
            log.error("cannot load model {}, keeping the current one: {}", path, e.toString());
            return;
        }
        log.info("model {} loaded from {} (window {}, horizon {}, threshold {}), warmed up in {} ms",
                model.version, path, model.window, model.horizon, model.threshold, warmUp);
        // The model replaced two versions ago is closed now: a batch holds its model for far less than a reload
        // interval, so no processor can still be using it.
        if (retired != null) {
            retired.close();
        }
        retired = current.getAndSet(model);
    }

    private Optional<Path> latest() {
        LocalDateTime limit = LocalDateTime.now(ZoneOffset.UTC).plusSeconds(MAX_CLOCK_AHEAD_S);
        try (Stream<Path> entries = Files.list(folder)) {
            return entries.filter(Files::isDirectory)
                    .filter(p -> VERSION.matcher(p.getFileName().toString()).matches())
                    .filter(p -> {
                        try {
                            return !LocalDateTime.parse(p.getFileName().toString(), FORMAT).isAfter(limit);
                        } catch (DateTimeParseException e) {
                            return false;
                        }
                    })
                    .max(Path::compareTo);
        } catch (IOException e) {
            if (Files.exists(folder)) {
                log.warn("cannot list {}: {}", folder, e.toString());
            }
            return Optional.empty();
        }
    }

    @Override
    public void close() {
        stopped = true;
        thread.interrupt();
    }
}
