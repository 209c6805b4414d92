// Command harness drives the stock centrifuge-go SDK in Protobuf mode for
// tests/test_sdks.py and prints one JSON object per SDK event on stdout, in
// the event vocabulary the four SDK harnesses share:
//
//	harness URL TOKEN [CHANNEL]
//
// CHANNEL, if given, is subscribed client-side and recoverable. The program
// runs until its stdin closes, then disconnects and exits 0.
//
// `make test` builds it into .tools/sdk/go/harness (gitignored).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/centrifugal/centrifuge-go"
)

// Reconnect fast: the tests cut the network and wait for the SDK to come back.
const (
	minReconnectDelay = 50 * time.Millisecond
	maxReconnectDelay = 500 * time.Millisecond
)

var stdout sync.Mutex

// event is one line of output. Handlers run on the SDK's goroutines, so
// lines are written whole under a lock.
type event map[string]any

func emit(e event) {
	line, err := json.Marshal(e)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"event":"error","error":%q}`, err.Error()))
	}
	stdout.Lock()
	defer stdout.Unlock()
	os.Stdout.Write(append(line, '\n'))
}

// publication reports the data as the SDK hands it over: in Protobuf mode
// opaque bytes, which encoding/json writes as base64.
func publication(channel string, serverSide bool, p centrifuge.Publication) event {
	data := p.Data
	if data == nil {
		data = []byte{}
	}
	return event{"event": "publication", "channel": channel, "server_side": serverSide,
		"offset": p.Offset, "data_b64": data}
}

func subscribed(channel string, serverSide, recoverable, wasRecovering, recovered bool, pos *centrifuge.StreamPosition) event {
	e := event{"event": "subscribed", "channel": channel, "server_side": serverSide,
		"recoverable": recoverable, "was_recovering": wasRecovering, "recovered": recovered}
	if pos != nil {
		e["offset"], e["epoch"] = pos.Offset, pos.Epoch
	}
	return e
}

func main() {
	if len(os.Args) < 3 || len(os.Args) > 4 {
		fmt.Fprintln(os.Stderr, "usage: harness URL TOKEN [CHANNEL]")
		os.Exit(2)
	}
	client := centrifuge.NewProtobufClient(os.Args[1], centrifuge.Config{
		Token:             os.Args[2],
		Name:              "pushgate-sdk-test-go",
		MinReconnectDelay: minReconnectDelay,
		MaxReconnectDelay: maxReconnectDelay,
	})

	client.OnConnecting(func(e centrifuge.ConnectingEvent) {
		emit(event{"event": "connecting", "code": e.Code, "reason": e.Reason})
	})
	client.OnConnected(func(e centrifuge.ConnectedEvent) {
		emit(event{"event": "connected", "client": e.ClientID})
	})
	client.OnDisconnected(func(e centrifuge.DisconnectedEvent) {
		emit(event{"event": "disconnected", "code": e.Code, "reason": e.Reason})
	})
	client.OnError(func(e centrifuge.ErrorEvent) {
		emit(event{"event": "error", "error": e.Error.Error()})
	})
	client.OnSubscribed(func(e centrifuge.ServerSubscribedEvent) {
		emit(subscribed(e.Channel, true, e.Recoverable, e.WasRecovering, e.Recovered, e.StreamPosition))
	})
	client.OnUnsubscribed(func(e centrifuge.ServerUnsubscribedEvent) {
		emit(event{"event": "unsubscribed", "channel": e.Channel, "server_side": true})
	})
	client.OnPublication(func(e centrifuge.ServerPublicationEvent) {
		emit(publication(e.Channel, true, e.Publication))
	})

	if len(os.Args) == 4 {
		subscribe(client, os.Args[3])
	}
	if err := client.Connect(); err != nil {
		emit(event{"event": "error", "error": err.Error()})
	}

	_, _ = io.Copy(io.Discard, os.Stdin) // run until stdin closes
	client.Close()
}

func subscribe(client *centrifuge.Client, channel string) {
	sub, err := client.NewSubscription(channel, centrifuge.SubscriptionConfig{Recoverable: true})
	if err != nil {
		emit(event{"event": "error", "channel": channel, "error": err.Error()})
		return
	}
	sub.OnSubscribing(func(e centrifuge.SubscribingEvent) {
		emit(event{"event": "subscribing", "channel": channel, "code": e.Code, "reason": e.Reason})
	})
	sub.OnSubscribed(func(e centrifuge.SubscribedEvent) {
		emit(subscribed(channel, false, e.Recoverable, e.WasRecovering, e.Recovered, e.StreamPosition))
	})
	sub.OnUnsubscribed(func(e centrifuge.UnsubscribedEvent) {
		emit(event{"event": "unsubscribed", "channel": channel, "code": e.Code, "reason": e.Reason})
	})
	sub.OnError(func(e centrifuge.SubscriptionErrorEvent) {
		emit(event{"event": "error", "channel": channel, "error": e.Error.Error()})
	})
	sub.OnPublication(func(e centrifuge.PublicationEvent) {
		emit(publication(channel, false, e.Publication))
	})
	if err := sub.Subscribe(); err != nil {
		emit(event{"event": "error", "channel": channel, "error": err.Error()})
	}
}
