package client_test

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

// TestPahoManualAck runs paho's manual acknowledgement (SetAutoAckDisabled
// and Message.Ack) with bare paho and the adapter: a message is
// acknowledged only once Ack is called, inside the callback or later from
// another goroutine; a message never acknowledged is redelivered to the
// next connection of the session.
func TestPahoManualAck(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	pub := pahoPublisher(t, m.URL())
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			topic := "mack/" + im.name
			id := "mack-" + im.name
			var mu sync.Mutex
			var later []mqtt.Message
			var seen sink
			cb := func(_ mqtt.Client, msg mqtt.Message) {
				p := string(msg.Payload())
				seen.add(p)
				switch {
				case strings.HasPrefix(p, "now"), p == "sentinel":
					msg.Ack()
				case strings.HasPrefix(p, "later"):
					mu.Lock()
					later = append(later, msg)
					mu.Unlock()
				}
			}
			opts := mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID(id).SetCleanSession(false).
				SetAutoAckDisabled(true).SetOrderMatters(true)
			cli := connectImpl(t, im, opts)
			waitTok(t, "subscribe", cli.Subscribe(topic, 1, cb))
			publishAll(t, pub, topic, 1, "now 1", "later 1", "never 1", "now 2", "later 2", "never 2")
			testbroker.Eventually(t, time.Minute, func() bool { return seen.distinct() == 6 }, "6 messages (got %v)", seen.list())
			mu.Lock()
			for _, msg := range later {
				msg.Ack() // after the callback returned, from another goroutine
			}
			mu.Unlock()
			// The sentinel's PUBACK follows the earlier ones on the connection,
			// and the DISCONNECT follows it.
			publishAll(t, pub, topic, 1, "sentinel")
			testbroker.Eventually(t, time.Minute, func() bool { return seen.distinct() == 7 }, "the sentinel")
			cli.Disconnect(250)

			var again sink
			opts = mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID(id).SetCleanSession(false).
				SetDefaultPublishHandler(again.handler())
			connectImpl(t, im, opts)
			publishAll(t, pub, topic, 1, "end")
			want := []string{"never 1", "never 2", "end"}
			testbroker.Eventually(t, time.Minute, func() bool {
				got := again.list()
				return slices.Contains(got, want[0]) && slices.Contains(got, want[1]) && slices.Contains(got, want[2])
			}, "the two unacknowledged messages and the end marker redelivered (got %v)", again.list())
			got := again.list()
			for _, p := range got {
				// The sentinel's own PUBACK may still be on its way when the
				// DISCONNECT is written (bare paho writes acknowledgements
				// asynchronously): its redelivery says nothing about the
				// messages acknowledged before it, which went out first.
				if !strings.HasPrefix(p, "never") && p != "end" && p != "sentinel" {
					t.Fatalf("redelivered after the restart: %v, want only the unacknowledged ones", got)
				}
			}
		})
	}
}
