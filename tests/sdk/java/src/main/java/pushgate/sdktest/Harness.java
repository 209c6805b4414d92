package pushgate.sdktest;

import io.github.centrifugal.centrifuge.Client;
import io.github.centrifugal.centrifuge.ConnectedEvent;
import io.github.centrifugal.centrifuge.ConnectingEvent;
import io.github.centrifugal.centrifuge.DisconnectedEvent;
import io.github.centrifugal.centrifuge.DuplicateSubscriptionException;
import io.github.centrifugal.centrifuge.ErrorEvent;
import io.github.centrifugal.centrifuge.EventListener;
import io.github.centrifugal.centrifuge.Options;
import io.github.centrifugal.centrifuge.PublicationEvent;
import io.github.centrifugal.centrifuge.ServerPublicationEvent;
import io.github.centrifugal.centrifuge.ServerSubscribedEvent;
import io.github.centrifugal.centrifuge.ServerUnsubscribedEvent;
import io.github.centrifugal.centrifuge.SubscribedEvent;
import io.github.centrifugal.centrifuge.SubscribingEvent;
import io.github.centrifugal.centrifuge.Subscription;
import io.github.centrifugal.centrifuge.SubscriptionErrorEvent;
import io.github.centrifugal.centrifuge.SubscriptionEventListener;
import io.github.centrifugal.centrifuge.SubscriptionOptions;
import io.github.centrifugal.centrifuge.UnsubscribedEvent;

import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Base64;

/**
 * Drives the stock centrifuge-java SDK (Protobuf is the only protocol it
 * speaks) for tests/test_sdks.py and prints one JSON object per SDK event on
 * stdout, in the event vocabulary the four SDK harnesses share:
 *
 * <pre>java -jar harness.jar URL TOKEN [CHANNEL]</pre>
 *
 * CHANNEL, if given, is subscribed client-side and recoverable. The program
 * runs until its stdin closes, then disconnects and exits 0.
 *
 * centrifuge-java 0.4.1 keeps the getters of StreamPosition package-private,
 * so subscribed events carry no offset or epoch; publications do carry their
 * offset.
 */
public final class Harness {
    /** Reconnect fast: the tests cut the network and wait for the SDK to come back. */
    private static final int MIN_RECONNECT_DELAY_MS = 50;
    private static final int MAX_RECONNECT_DELAY_MS = 500;

    private static final PrintStream OUT =
            new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);

    private Harness() {
    }

    /** Prints one event: keys and values alternate. Synchronized because the SDK calls back on its own threads. */
    static synchronized void emit(Object... keysAndValues) {
        StringBuilder line = new StringBuilder("{");
        for (int i = 0; i < keysAndValues.length; i += 2) {
            if (i > 0) {
                line.append(',');
            }
            appendJson(line, keysAndValues[i]);
            line.append(':');
            appendJson(line, keysAndValues[i + 1]);
        }
        OUT.println(line.append('}'));
    }

    /** JSON for the few value types events hold: null, booleans, numbers and strings. */
    private static void appendJson(StringBuilder out, Object value) {
        if (value == null || value instanceof Boolean || value instanceof Number) {
            out.append(value);
            return;
        }
        String text = value.toString();
        out.append('"');
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        out.append('"');
    }

    /** In Protobuf mode publication data is opaque bytes: hand them to the test as they came. */
    private static String base64(byte[] data) {
        return Base64.getEncoder().encodeToString(data == null ? new byte[0] : data);
    }

    public static void main(String[] args) throws IOException, InterruptedException {
        if (args.length < 2 || args.length > 3) {
            System.err.println("usage: java -jar harness.jar URL TOKEN [CHANNEL]");
            System.exit(2);
        }
        Options options = new Options();
        options.setToken(args[1]);
        options.setName("pushgate-sdk-test-java");
        options.setMinReconnectDelay(MIN_RECONNECT_DELAY_MS);
        options.setMaxReconnectDelay(MAX_RECONNECT_DELAY_MS);

        Client client = new Client(args[0], options, new EventListener() {
            @Override
            public void onConnecting(Client c, ConnectingEvent e) {
                emit("event", "connecting", "code", e.getCode(), "reason", e.getReason());
            }

            @Override
            public void onConnected(Client c, ConnectedEvent e) {
                emit("event", "connected", "client", e.getClient());
            }

            @Override
            public void onDisconnected(Client c, DisconnectedEvent e) {
                emit("event", "disconnected", "code", e.getCode(), "reason", e.getReason());
            }

            @Override
            public void onError(Client c, ErrorEvent e) {
                emit("event", "error", "error", String.valueOf(e.getError()));
            }

            @Override
            public void onSubscribed(Client c, ServerSubscribedEvent e) {
                emit("event", "subscribed", "channel", e.getChannel(), "server_side", true,
                        "recoverable", e.getRecoverable(), "was_recovering", e.wasRecovering(),
                        "recovered", e.getRecovered());
            }

            @Override
            public void onUnsubscribed(Client c, ServerUnsubscribedEvent e) {
                emit("event", "unsubscribed", "channel", e.getChannel(), "server_side", true);
            }

            @Override
            public void onPublication(Client c, ServerPublicationEvent e) {
                emit("event", "publication", "channel", e.getChannel(), "server_side", true,
                        "offset", e.getOffset(), "data_b64", base64(e.getData()));
            }
        });

        if (args.length == 3) {
            subscribe(client, args[2]);
        }
        client.connect();

        byte[] buffer = new byte[4096];
        while (System.in.read(buffer) >= 0) {
            // run until stdin closes
        }
        // close() disconnects, then waits for the SDK's executor to finish
        // (the close frame goes out); OkHttp's own threads would still keep
        // the JVM alive for a minute, hence the explicit exit.
        client.close(2000);
        System.exit(0);
    }

    private static void subscribe(Client client, String channel) {
        SubscriptionOptions options = new SubscriptionOptions();
        options.setRecoverable(true);
        SubscriptionEventListener listener = new SubscriptionEventListener() {
            @Override
            public void onSubscribing(Subscription sub, SubscribingEvent e) {
                emit("event", "subscribing", "channel", channel, "code", e.getCode(), "reason", e.getReason());
            }

            @Override
            public void onSubscribed(Subscription sub, SubscribedEvent e) {
                emit("event", "subscribed", "channel", channel, "server_side", false,
                        "recoverable", e.getRecoverable(), "was_recovering", e.wasRecovering(),
                        "recovered", e.getRecovered());
            }

            @Override
            public void onUnsubscribed(Subscription sub, UnsubscribedEvent e) {
                emit("event", "unsubscribed", "channel", channel, "code", e.getCode(), "reason", e.getReason());
            }

            @Override
            public void onError(Subscription sub, SubscriptionErrorEvent e) {
                emit("event", "error", "channel", channel, "error", String.valueOf(e.getError()));
            }

            @Override
            public void onPublication(Subscription sub, PublicationEvent e) {
                emit("event", "publication", "channel", channel, "server_side", false,
                        "offset", e.getOffset(), "data_b64", base64(e.getData()));
            }
        };
        try {
            client.newSubscription(channel, options, listener).subscribe();
        } catch (DuplicateSubscriptionException e) {
            emit("event", "error", "channel", channel, "error", String.valueOf(e));
        }
    }
}
