package io.carstream.hivemq;

import com.hivemq.embedded.EmbeddedHiveMQ;
import com.hivemq.embedded.EmbeddedHiveMQBuilder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;

/**
 * HiveMQ CE embedded, run from a home folder that the Python runtime prepared: conf/config.xml (listeners,
 * persistence, queue limits), data/ (sessions and queued messages, kept across restarts), extensions/ (none).
 * SIGTERM stops it gracefully; a SIGKILL leaves data/ as the file persistence last wrote it.
 */
public final class Main {

    private static final String USAGE = String.join("\n",
            "usage: java -jar car-hivemq.jar --home DIR",
            "",
            "Runs HiveMQ Community Edition (embedded) with DIR/conf/config.xml, its data in DIR/data and extensions",
            "in DIR/extensions. scripts/runtime/hivemq.py writes the configuration and starts this program",
            "(make up MQTT_BROKER=hivemq). SIGTERM stops the broker gracefully.");

    private Main() {
    }

    public static void main(String[] args) throws Exception {
        Path home = null;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--home") && i + 1 < args.length) {
                home = Path.of(args[++i]).toAbsolutePath();
            } else {
                System.out.println(USAGE);
                System.exit(args[i].equals("--help") || args[i].equals("-h") ? 0 : 2);
            }
        }
        if (home == null || !Files.isRegularFile(home.resolve("conf").resolve("config.xml"))) {
            System.err.println("error: --home must name a folder with conf/config.xml (scripts/runtime/hivemq.py "
                    + "writes it)\n\n" + USAGE);
            System.exit(2);
        }
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("extensions"));
        EmbeddedHiveMQBuilder builder = EmbeddedHiveMQ.builder()
                .withConfigurationFolder(home.resolve("conf"))
                .withDataFolder(home.resolve("data"))
                .withExtensionsFolder(home.resolve("extensions"));
        EmbeddedHiveMQ hivemq = builder.build();
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                hivemq.stop().join();
            } finally {
                stopped.countDown();
            }
        }, "hivemq-stop"));
        try {
            hivemq.start().join();
        } catch (RuntimeException e) {
            System.err.println("error: HiveMQ did not start: " + e.getMessage());
            System.exit(1);
        }
        System.out.println("HiveMQ started (home " + home + ")");
        stopped.await();
    }
}
