package io.carstream.streams;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;
import java.util.Iterator;
import java.util.Optional;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The read side of the model registry (ml/registry.py, which writes it): which version of the model folder to serve.
 * {@code <model_dir>/registry/aliases.json} is {"champion": version|null, "challenger": version|null}, replaced whole,
 * so it is read whole or not at all.
 *
 * <p>{@link #servingVersion} is Python's {@code serving_version}: the champion when the registry names one (even when
 * its folder is gone: loading it fails and the current model keeps serving), else the newest complete version that
 * is not the pending challenger, as before the registry existed. Complete versions are those of ml/artifact.py:
 * folders named by a sortable UTC time, renamed into place when whole; one named more than 10 minutes ahead of the
 * clock is left out, so that a wrong clock cannot hide every later version.
 */
final class ModelRegistry {
    private static final Logger log = LoggerFactory.getLogger(ModelRegistry.class);
    static final Path ALIASES = Path.of("registry", "aliases.json");
    private static final Pattern VERSION = Pattern.compile("^\\d{8}T\\d{6}Z$");
    private static final DateTimeFormatter FORMAT = DateTimeFormatter.ofPattern("yyyyMMdd'T'HHmmss'Z'");
    private static final long MAX_CLOCK_AHEAD_S = 600;
    // Python's json.loads refuses anything after the value; Jackson ignores it unless told otherwise.
    private static final ObjectMapper JSON = new ObjectMapper().enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    /** The two aliases; null where none is named. */
    record Aliases(String champion, String challenger) {}

    private ModelRegistry() {}

    /** The version folder to serve, or empty when there is none; an IOException when aliases.json is unreadable. */
    static Optional<Path> servingVersion(Path folder) throws IOException {
        Optional<Aliases> aliases = readAliases(folder);
        if (aliases.isPresent() && aliases.get().champion() != null) {
            return Optional.of(folder.resolve(aliases.get().champion()));
        }
        return newest(folder, aliases.map(Aliases::challenger).orElse(null));
    }

    /** The aliases, or empty where no registry exists; an IOException naming the file when it is no aliases. */
    static Optional<Aliases> readAliases(Path folder) throws IOException {
        Path path = folder.resolve(ALIASES);
        JsonNode root;
        try {
            root = JSON.readTree(Files.readAllBytes(path));
        } catch (NoSuchFileException e) {
            return Optional.empty();
        } catch (JsonProcessingException e) {
            throw invalid(path, e.getOriginalMessage());
        }
        if (root == null || !root.isObject()) {
            throw invalid(path, "no JSON object");
        }
        for (Iterator<String> names = root.fieldNames(); names.hasNext(); ) {
            String name = names.next();
            if (!name.equals("champion") && !name.equals("challenger")) {
                throw invalid(path, "unexpected field " + name);
            }
        }
        return Optional.of(new Aliases(version(root, "champion", path), version(root, "challenger", path)));
    }

    private static IOException invalid(Path path, String why) {
        return new IOException(path + " is not valid registry aliases (" + why + "); the next decision rewrites it"
                + " from decisions.jsonl");
    }

    private static String version(JsonNode root, String alias, Path path) throws IOException {
        JsonNode value = root.path(alias);
        if (value.isMissingNode() || value.isNull()) {
            return null;
        }
        if (!value.isTextual() || !VERSION.matcher(value.asText()).matches()) {
            throw new IOException(path + " names " + value + ", which is no model version");
        }
        return value.asText();
    }

    /** The newest complete version of the folder other than {@code except} (null: none excepted). */
    static Optional<Path> newest(Path folder, String except) {
        LocalDateTime limit = LocalDateTime.now(ZoneOffset.UTC).plusSeconds(MAX_CLOCK_AHEAD_S);
        try (Stream<Path> entries = Files.list(folder)) {
            return entries.filter(Files::isDirectory)
                    .filter(p -> isVersionUpTo(p.getFileName().toString(), limit))
                    .filter(p -> !p.getFileName().toString().equals(except))
                    .max(Path::compareTo);
        } catch (IOException e) {
            if (Files.exists(folder)) {
                log.warn("cannot list {}: {}", folder, e.toString());
            }
            return Optional.empty();
        }
    }

    private static boolean isVersionUpTo(String name, LocalDateTime limit) {
        if (!VERSION.matcher(name).matches()) {
            return false; // the hidden temporary folder of a version being written, or anything else
        }
        try {
            return !LocalDateTime.parse(name, FORMAT).isAfter(limit);
        } catch (DateTimeParseException e) { // matches the pattern but is no time (month 13)
            return false;
        }
    }
}
