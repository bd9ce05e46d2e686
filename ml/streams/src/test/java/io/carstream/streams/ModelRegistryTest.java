package io.carstream.streams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The version to serve, by the rule of ml/registry.py's serving_version, on folders and aliases written here. */
class ModelRegistryTest {
    private static final String A = "20240101T000000Z";
    private static final String B = "20240201T000000Z";
    private static final String C = "20240301T000000Z";

    @TempDir
    Path folder;

    private void versions(String... names) throws IOException {
        for (String name : names) {
            Files.createDirectories(folder.resolve(name));
        }
    }

    private void aliases(String json) throws IOException {
        Files.createDirectories(folder.resolve("registry"));
        Files.writeString(folder.resolve(ModelRegistry.ALIASES), json);
    }

    private Optional<String> serving() throws IOException {
        return ModelRegistry.servingVersion(folder).map(path -> path.getFileName().toString());
    }

    @Test
    void withoutARegistryTheNewestCompleteVersion() throws IOException {
        assertEquals(Optional.empty(), serving());
        // a version being written (hidden), a name that is no time, one far in the future: none is complete
        versions(A, B, "." + C + "-tmp", "20241301T000000Z", "29990101T000000Z", "notes");
        assertEquals(Optional.of(B), serving());
    }

    @Test
    void theChampionEvenWhenNewerVersionsExist() throws IOException {
        versions(A, B, C);
        aliases("{\"champion\": \"" + A + "\", \"challenger\": \"" + C + "\"}");
        assertEquals(Optional.of(A), serving());
        aliases("{\"champion\": \"" + B + "\", \"challenger\": null}"); // a promotion, then a rollback
        assertEquals(Optional.of(B), serving());
        aliases("{\"champion\": \"" + A + "\", \"challenger\": null}");
        assertEquals(Optional.of(A), serving());
    }

    @Test
    void noChampionTheNewestButAPendingChallenger() throws IOException {
        versions(A, B, C);
        aliases("{\"champion\": null, \"challenger\": \"" + C + "\"}");
        assertEquals(Optional.of(B), serving());
        aliases("{\"champion\": null, \"challenger\": null}");
        assertEquals(Optional.of(C), serving());
        aliases("{}");
        assertEquals(Optional.of(C), serving());
    }

    @Test
    void aChampionWhoseFolderIsGoneIsStillNamed() throws IOException {
        versions(B);
        aliases("{\"champion\": \"" + A + "\", \"challenger\": null}");
        assertEquals(Optional.of(A), serving(), "loading it fails, and the current model keeps serving");
    }

    @Test
    void anAliasesFileThatIsNoAliasesIsAnErrorNamingIt() throws IOException {
        versions(A);
        for (String broken : new String[] {"{\"champion\": ", "", "[]", "{\"champion\": 5}",
                "{\"champion\": \"latest\"}", "{\"champion\": null, \"winner\": null}",
                "{\"champion\": null} {}"}) {
            aliases(broken);
            IOException error = assertThrows(IOException.class, this::serving, broken);
            assertTrue(error.getMessage().contains(ModelRegistry.ALIASES.toString()), error.getMessage());
        }
    }
}
