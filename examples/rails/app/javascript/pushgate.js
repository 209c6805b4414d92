// The browser side: the stock centrifuge client (npm install centrifuge),
// pointed at the gateway, with tokens from the Rails app.
import { Centrifuge } from "centrifuge";

async function fetchToken(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  if (response.status === 401 || response.status === 403) {
    throw new Centrifuge.UnauthorizedError("not signed in");
  }
  return (await response.json()).token;
}

export const pushgate = new Centrifuge("wss://push.example.com/connection/websocket", {
  getToken: () => fetchToken("/pushgate/token"),
});

// Server-side channels (the user's own "#<id>" and the token's "channels").
pushgate.on("publication", (ctx) => console.log(ctx.channel, ctx.data));
pushgate.connect();

// A private channel, with a subscription token from the app.
const billing = pushgate.newSubscription("private:billing", {
  getToken: ({ channel }) => fetchToken(`/pushgate/subscription_token?channel=${encodeURIComponent(channel)}`),
});
billing.on("publication", (ctx) => console.log("billing", ctx.data));
billing.subscribe();
