package client_test

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

// TestPahoPublishTokenSemantics runs paho's usual publishing loop (publish
// without waiting, keep the tokens, wait for them at the end) on bare paho
// and on the adapter: Publish returns at once, a token completes only on
// the broker's acknowledgement (not while the link passes nothing), with
// no error, and everything arrives.
func TestPahoPublishTokenSemantics(t *testing.T) {
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			m, p := rig(t, testbroker.MosquittoOptions{})
			topic := "tok/" + im.name
			sub := subscriber(t, m, topic)
			opts := mqtt.NewClientOptions().AddBroker(p.URL()).SetClientID("tok-" + im.name).
				SetCleanSession(false).SetKeepAlive(30 * time.Second).SetAutoReconnect(false)
			cli := connectImpl(t, im, opts)

			// A link that passes nothing: the token must not complete.
			p.SetBlackhole(true)
			held := cli.Publish(topic, 1, false, "0 held")
			if held.WaitTimeout(500 * time.Millisecond) {
				t.Fatalf("token completed while the link passed nothing (err %v)", held.Error())
			}
			p.SetBlackhole(false)
			waitTok(t, "held publish", held)

			const n = 2000
			toks := make([]mqtt.Token, 0, n)
			start := time.Now()
			for i := 1; i <= n; i++ {
				toks = append(toks, cli.Publish(topic, 1, false, fmt.Sprintf("%d payload", i)))
			}
			handedOver := time.Since(start)
			for i, tok := range toks {
				waitTok(t, fmt.Sprintf("publish %d", i+1), tok)
			}
			t.Logf("%s: %d publishes handed over in %v", im.name, n, handedOver)
			if !sub.WaitCount(topic, n+1, time.Minute) {
				t.Fatalf("subscriber got %d of %d", sub.Count(topic), n+1)
			}
		})
	}
}
