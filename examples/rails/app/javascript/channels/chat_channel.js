// Unchanged from an Action Cable app: the stock @rails/actioncable, whose
// createConsumer() reads the action-cable-url meta tag (the gateway's /cable,
// see app/views/layouts/application.html.erb). The session cookie goes with
// the WebSocket, and the app's ApplicationCable::Connection reads it.
import { createConsumer } from "@rails/actioncable";

const consumer = createConsumer();

export function joinRoom(roomId, { onMessage, onHistory }) {
  const subscription = consumer.subscriptions.create({ channel: "ChatChannel", room: roomId }, {
    received(data) {
      if (data.type === "history") onHistory(data.messages);
      else onMessage(data.message);
    },
    rejected() {
      console.warn(`not allowed in room ${roomId}`);
    },
  });
  return {
    speak: (text) => subscription.perform("speak", { text }),
    leave: () => subscription.unsubscribe(),
  };
}
