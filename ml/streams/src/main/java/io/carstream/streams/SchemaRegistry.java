package io.carstream.streams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.Schema;

/**
 * The two calls of the Confluent schema registry API that serving needs (Apicurio's ccompat API answers them too):
 * the schema of an id, and the id of a schema registered under a subject. Answers are cached: an id never changes.
 * Confluent's Java serializers are not on Maven Central; the wire format is small enough to read here.
 */
final class SchemaRegistry {
    /** The registry did not answer (transport error, a 5xx): no property of the record, so the caller retries. */
    static final class Unavailable extends Exception {
        Unavailable(String message) {
            super(message);
        }
    }

    /** The registry answered that it does not know the id (the record is bad). */
    static final class Unknown extends Exception {
        Unknown(String message) {
            super(message);
        }
    }

    private static final ObjectMapper JSON = new ObjectMapper();
    private final String url;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private final Map<Integer, Schema> byId = new ConcurrentHashMap<>();

    SchemaRegistry(String url) {
        this.url = url;
    }

    Schema schema(int id) throws Unavailable, Unknown {
        Schema known = byId.get(id);
        if (known != null) {
            return known;
        }
        JsonNode answer = call(HttpRequest.newBuilder(URI.create(url + "/schemas/ids/" + id)).GET(), "schema id " + id);
        Schema schema = new Schema.Parser().parse(answer.get("schema").asText());
        byId.put(id, schema);
        return schema;
    }

    /** The id of `schema` under `subject`, registering it when new (what the Python serializers do by default). */
    int register(String subject, Schema schema) throws Unavailable, Unknown {
        String body;
        try {
            body = JSON.writeValueAsString(Map.of("schema", schema.toString()));
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(url + "/subjects/" + subject + "/versions"))
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .POST(HttpRequest.BodyPublishers.ofString(body));
        int id = call(request, "subject " + subject).get("id").asInt();
        byId.put(id, schema);
        return id;
    }

    private JsonNode call(HttpRequest.Builder request, String what) throws Unavailable, Unknown {
        HttpResponse<String> response;
        try {
            response = http.send(request.timeout(Duration.ofSeconds(10)).build(), HttpResponse.BodyHandlers.ofString());
        } catch (IOException e) {
            throw new Unavailable("schema registry " + url + " unavailable: " + e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new Unavailable("interrupted while asking the schema registry");
        }
        if (response.statusCode() >= 500) {
            throw new Unavailable("schema registry " + url + " answered " + response.statusCode() + " for " + what);
        }
        if (response.statusCode() != 200) {
            throw new Unknown("schema registry answered " + response.statusCode() + " for " + what + ": "
                    + response.body());
        }
        try {
            return JSON.readTree(response.body());
        } catch (IOException e) {
            throw new Unknown("schema registry's answer for " + what + " is no JSON: " + e.getMessage());
        }
    }
}
