package io.carstream.hivemq;

import com.hivemq.embedded.EmbeddedExtension;
import com.hivemq.embedded.EmbeddedHiveMQ;
import com.hivemq.embedded.EmbeddedHiveMQBuilder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;

/**
 * HiveMQ CE embedded, run from a home folder that the Python runtime prepared: conf/config.xml (listeners,
 * persistence, queue limits), data/ (sessions and queued messages, kept across restarts), extensions/ (none).
 * With a password file and an ACL file (the secured mode) our embedded extension checks every login and grant.
 * SIGTERM stops it gracefully; a SIGKILL leaves data/ as the file persistence last wrote it.
 */
public final class Main {

    private static final String USAGE = String.join("\n",
            "usage: java -jar car-hivemq.jar --home DIR [--password-file FILE --acl-file FILE]",
            "",
            "Runs HiveMQ Community Edition (embedded) with DIR/conf/config.xml, its data in DIR/data and extensions",
            "in DIR/extensions. scripts/runtime/hivemq.py writes the configuration and starts this program",
            "(make up MQTT_BROKER=hivemq). SIGTERM stops the broker gracefully.",
            "",
            "  --password-file FILE  the secured mode: Mosquitto's password file (PBKDF2-SHA512 lines) that",
            "                        scripts/runtime/secured.py writes; every client must log in with one of its users",
            "  --acl-file FILE       with it: Mosquitto's ACL file from admin/policy.py; what it does not grant is denied");

    private Main() {
    }

    public static void main(String[] args) throws Exception {
        Path home = null;
        Path passwordFile = null;
        Path aclFile = null;
        for (int i = 0; i < args.length; i++) {
            boolean valued = i + 1 < args.length;
            if (args[i].equals("--home") && valued) {
                home = Path.of(args[++i]).toAbsolutePath();
            } else if (args[i].equals("--password-file") && valued) {
                passwordFile = Path.of(args[++i]);
            } else if (args[i].equals("--acl-file") && valued) {
                aclFile = Path.of(args[++i]);
            } else {
                System.out.println(USAGE);
                System.exit(args[i].equals("--help") || args[i].equals("-h") ? 0 : 2);
            }
        }
        if (home == null || !Files.isRegularFile(home.resolve("conf").resolve("config.xml"))) {
            fail("--home must name a folder with conf/config.xml (scripts/runtime/hivemq.py writes it)");
        }
        if ((passwordFile == null) != (aclFile == null)) {
            fail("--password-file and --acl-file go together (the secured mode)");
        }
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("extensions"));
        EmbeddedHiveMQBuilder builder = EmbeddedHiveMQ.builder()
                .withConfigurationFolder(home.resolve("conf"))
                .withDataFolder(home.resolve("data"))
                .withExtensionsFolder(home.resolve("extensions"));
        if (passwordFile != null) {
            builder.withEmbeddedExtension(EmbeddedExtension.builder()
                    .withId("car-stream-security")
                    .withName("car-stream-ml secured mode")
                    .withVersion("1")
                    .withExtensionMain(new FileSecurity(new PasswordFile(passwordFile), new AclFile(aclFile)))
                    .build());
        }
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

    private static void fail(String message) {
        System.err.println("error: " + message + "\n\n" + USAGE);
        System.exit(2);
    }
}
