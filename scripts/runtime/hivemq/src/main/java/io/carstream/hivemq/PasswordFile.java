package io.carstream.hivemq;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;

/**
 * Mosquitto's password file, the one scripts/runtime/secured.py writes (common/security.py): one
 * {@code user:$7$iterations$salt$hash} line per identity, PBKDF2-HMAC-SHA512, salt and hash in base64. Read once at
 * start: both brokers check the same per-car secrets.
 */
final class PasswordFile {

    private record Entry(int iterations, byte[] salt, byte[] hash) {
    }

    private final Map<String, Entry> entries = new HashMap<>();

    PasswordFile(Path file) throws IOException {
        for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            if (line.isBlank() || line.startsWith("#")) {
                continue;
            }
            int colon = line.indexOf(':');
            String[] parts = line.substring(colon + 1).split("\\$");
            // "$7$iterations$salt$hash" splits into "", "7", iterations, salt, hash.
            if (colon < 1 || parts.length != 5 || !parts[1].equals("7")) {
                throw new IOException(file + ": not a Mosquitto PBKDF2-SHA512 ($7$) line: " + line.split(":")[0]);
            }
            Base64.Decoder base64 = Base64.getDecoder();
            entries.put(line.substring(0, colon),
                    new Entry(Integer.parseInt(parts[2]), base64.decode(parts[3]), base64.decode(parts[4])));
        }
    }

    int size() {
        return entries.size();
    }

    /** Whether {@code password} is {@code user}'s; false for an unknown user. */
    boolean matches(String user, byte[] password) {
        Entry entry = entries.get(user);
        if (entry == null) {
            return false;
        }
        char[] chars = new String(password, StandardCharsets.UTF_8).toCharArray();
        try {
            PBEKeySpec spec = new PBEKeySpec(chars, entry.salt(), entry.iterations(), entry.hash().length * 8);
            byte[] derived = SecretKeyFactory.getInstance("PBKDF2WithHmacSHA512").generateSecret(spec).getEncoded();
            return MessageDigest.isEqual(derived, entry.hash());
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("PBKDF2WithHmacSHA512 is missing from this Java runtime", e);
        }
    }
}
