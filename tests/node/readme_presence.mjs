// The README's presence snippet ("Who is online"), run as it is written, with
// the stock centrifuge-js SDK under Node. tests/test_make_run.py runs it
// against `make run`'s gateway, with URL (the WebSocket endpoint) and TOKEN
// (a connection token), and reads what the snippet logs:
//
//   joined <user>, left <user>, and the presence and its stats once subscribed
//
// and the lines this harness adds: "subscription error <code> <message>" and
// "unsubscribed <code> <reason>" (what a user of the snippet would not see).
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import { readFileSync } from 'node:fs';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const snippet = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1])
  .find((code) => code.includes("newSubscription('room:1')"));
if (!snippet) {
  console.log("FAIL: README.md has no js block with newSubscription('room:1')");
  process.exit(1);
}

const client = new Centrifuge(process.env.URL, { token: process.env.TOKEN, websocket: WebSocket });
// The snippet expects `client`, and declares and subscribes `room`.
const room = new Function('client', `${snippet}\nreturn room;`)(client);
room.on('error', (ctx) => console.log(`subscription error ${ctx.error.code} ${ctx.error.message}`));
room.on('unsubscribed', (ctx) => console.log(`unsubscribed ${ctx.code} ${ctx.reason}`));
client.connect();
