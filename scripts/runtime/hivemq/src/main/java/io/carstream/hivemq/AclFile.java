package io.carstream.hivemq;

import com.hivemq.extension.sdk.api.auth.parameter.TopicPermission;
import com.hivemq.extension.sdk.api.auth.parameter.TopicPermission.MqttActivity;
import com.hivemq.extension.sdk.api.services.builder.Builders;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The part of Mosquitto's ACL file format that admin/policy.py's MOSQUITTO_ACL uses, turned into HiveMQ topic
 * permissions: {@code user NAME} starts a user's grants, {@code topic read|write|readwrite FILTER} grants that user
 * subscribing, publishing or both, {@code pattern ... FILTER} grants every user, {@code %u} standing for its name.
 * What is not granted is denied: one policy, one file, for both brokers.
 */
final class AclFile {

    private record Grant(MqttActivity activity, String filter) {
    }

    private final Map<String, List<Grant>> byUser = new HashMap<>();
    private final List<Grant> patterns = new ArrayList<>();

    AclFile(Path file) throws IOException {
        String user = null;
        for (String raw : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            String line = raw.strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            String[] words = line.split("\\s+");
            if (words[0].equals("user") && words.length == 2) {
                user = words[1];
            } else if ((words[0].equals("topic") || words[0].equals("pattern")) && words.length == 3) {
                Grant grant = new Grant(activity(words[1], file), words[2]);
                if (words[0].equals("pattern")) {
                    patterns.add(grant);
                } else if (user != null) {
                    byUser.computeIfAbsent(user, name -> new ArrayList<>()).add(grant);
                } else {
                    throw new IOException(file + ": a topic line before any user line: " + line);
                }
            } else {
                throw new IOException(file + ": a line this broker does not read: " + line);
            }
        }
    }

    private static MqttActivity activity(String access, Path file) throws IOException {
        return switch (access) {
            case "read" -> MqttActivity.SUBSCRIBE;
            case "write" -> MqttActivity.PUBLISH;
            case "readwrite" -> MqttActivity.ALL;
            default -> throw new IOException(file + ": access must be read, write or readwrite, not " + access);
        };
    }

    /** What {@code user} may do: its own grants and every pattern with its name in place of %u. */
    List<TopicPermission> permissions(String user) {
        List<TopicPermission> out = new ArrayList<>();
        for (Grant grant : byUser.getOrDefault(user, List.of())) {
            out.add(permission(grant.activity(), grant.filter()));
        }
        for (Grant grant : patterns) {
            out.add(permission(grant.activity(), grant.filter().replace("%u", user)));
        }
        return out;
    }

    private static TopicPermission permission(MqttActivity activity, String filter) {
        return Builders.topicPermission()
                .topicFilter(filter)
                .activity(activity)
                .type(TopicPermission.PermissionType.ALLOW)
                .build();
    }
}
