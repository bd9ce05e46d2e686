package io.carstream.streams;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicReference;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Hot reload, as ml/serving/model_watcher.py does it: a thread looks every reload interval for the version to serve
 * ({@link ModelRegistry#servingVersion}: the registry's champion, else the newest complete version), loads and warms
 * it up while the current one keeps serving, and hands it over; the processors take it between two batches. A
 * version is loaded whenever it differs from the one served, newer or not, so that a promotion and a rollback switch
 * a running program. A version that fails to load is logged and skipped, and the current model keeps serving, until
 * another version is to be served; an unreadable registry is logged once and the current model keeps serving.
 */
final class ModelWatcher implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ModelWatcher.class);

    private final Path folder;
    private final double oodThreshold;
    private final int threads;
    private final AtomicReference<ServedModel> current = new AtomicReference<>();
    private ServedModel retired;
    private String served; // the version loaded last
    private String failed; // a version that failed to load: not tried again while it stays the one to serve
    private String complaint; // why the version to serve is unknown, logged once while it lasts
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
        Optional<Path> chosen;
        try {
            chosen = ModelRegistry.servingVersion(folder);
        } catch (IOException e) {
            if (!Objects.equals(e.getMessage(), complaint)) {
                log.error("cannot tell which model to serve from {}, keeping the current one: {}", folder,
                        e.getMessage());
                complaint = e.getMessage();
            }
            return;
        }
        complaint = null;
        if (chosen.isEmpty()) {
            return;
        }
        Path path = chosen.get();
        String version = path.getFileName().toString();
        if (!version.equals(failed)) {
            failed = null; // named again later, it is tried again
        }
        if (version.equals(served) || version.equals(failed)) {
            return;
        }
        ServedModel model;
        long warmUp;
        try {
            model = ServedModel.load(path, oodThreshold, threads);
            warmUp = model.warmUpMillis();
        } catch (IOException | RuntimeException e) { // a broken artifact must not stop serving the current one
            log.error("cannot load model {}, keeping the current one: {}", path, e.toString());
            failed = version;
            return;
        }
        log.info("model {} loaded from {} (window {}, horizon {}, threshold {}), warmed up in {} ms",
                model.version, path, model.window, model.horizon, model.threshold, warmUp);
        served = version;
        // The model replaced two versions ago is closed now: a batch holds its model for far less than a reload
        // interval, so no processor can still be using it.
        if (retired != null) {
            retired.close();
        }
        retired = current.getAndSet(model);
    }

    @Override
    public void close() {
        stopped = true;
        thread.interrupt();
    }
}
