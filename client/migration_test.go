package client_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
	"github.com/holdfast-mqtt/holdfast/internal/testsub"
)

// pahoApp is a program written against paho's API as paho's README and
// tutorials write one: handlers set on the options, a subscription made in
// OnConnect (paho's way to resubscribe), a nil-callback subscription served
// by the default handler, and a publish loop that waits on each token.
// newClient is its only link to an implementation: mqtt.NewClient, or
// Holdfast's FromPaho/Paho.
type pahoApp struct {
	cli            mqtt.Client
	routed, dflt   sink
	connects, lost atomic.Int32
	published      atomic.Int64
	errs           sink // publish errors
}

func startPahoApp(t *testing.T, broker string, newClient func(*mqtt.ClientOptions) mqtt.Client) *pahoApp {
	t.Helper()
	app := &pahoApp{}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID("migrated-app").
		SetCleanSession(false).SetAutoReconnect(true).SetKeepAlive(2 * time.Second).
		SetMaxReconnectInterval(500 * time.Millisecond).
		SetDefaultPublishHandler(app.dflt.handler()).
		SetOnConnectHandler(func(c mqtt.Client) {
			app.connects.Add(1)
			c.Subscribe("mig/in/#", 1, app.routed.handler())
			c.Subscribe("mig/any/#", 2, nil)
		}).
		SetConnectionLostHandler(func(mqtt.Client, error) { app.lost.Add(1) })
	app.cli = newClient(opts)
	if tok := app.cli.Connect(); !tok.WaitTimeout(stallTimeout) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	return app
}

// publish is the app's loop: one message at a time, waiting on its token.
func (app *pahoApp) publish(from, to int) {
	for i := from; i <= to; i++ {
		tok := app.cli.Publish("mig/out", 1, false, payload(uint64(i)))
		tok.Wait()
		if err := tok.Error(); err != nil {
			app.errs.add(fmt.Sprintf("%d: %v", i, err))
		}
		app.published.Add(1)
	}
}

// reached returns the payloads that reached a handler of the app (its
// routed callback or its default handler) on topics with prefix.
func (app *pahoApp) reached(prefix string) []string {
	var out []string
	for _, p := range append(app.routed.list(), app.dflt.list()...) {
		if strings.HasPrefix(p, prefix) {
			out = append(out, p)
		}
	}
	return out
}

func distinctCount(ps []string) int {
	seen := map[string]bool{}
	for _, p := range ps {
		seen[p] = true
	}
	return len(seen)
}

// TestMigratedPahoAppLosesNothing runs pahoApp with Holdfast as its
// constructor (FromPaho with an outbox directory, then Paho), through the
// fault proxy: cuts and a graceful broker restart while it publishes and
// receives, then a stop and a second run while another client publishes to
// its session. Everything it published arrives (an independent subscriber
// checks), everything published to it reaches one of its handlers, and the
// QoS 2 stream reaches them once.
func TestMigratedPahoAppLosesNothing(t *testing.T) {
	const (
		out1, out2 = 150, 200 // the app publishes 1..out1 in run 1, then up to out2 in run 2
		live, away = 100, 150 // others publish 1..live while it runs, then up to away while it is stopped
	)
	m, p := rig(t, testbroker.MosquittoOptions{})
	sub := subscriber(t, m, "mig/out")
	ext := newClient(t, client.Config{Brokers: []string{m.URL()}, ClientID: "mig-ext", PersistentSession: true})
	dir := t.TempDir()
	holdfast := func(o *mqtt.ClientOptions) mqtt.Client {
		hf, err := client.New(client.FromPaho(o, dir))
		if err != nil {
			t.Fatalf("New(FromPaho): %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = hf.Close(ctx)
		})
		return hf.Paho()
	}
	extPublish := func(from, to int) {
		for i := from; i <= to; i++ {
			for _, m := range []struct {
				topic string
				qos   byte
			}{{"mig/in/x", 1}, {"mig/any/x", 2}} {
				body := fmt.Sprintf("%s %d", m.topic, i)
				if _, err := ext.Publish(context.Background(), m.topic, []byte(body), client.PublishOptions{QoS: m.qos}); err != nil {
					t.Errorf("publish %s: %v", body, err)
				}
			}
		}
	}

	app := startPahoApp(t, p.URL(), holdfast)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); app.publish(1, out1) }()
	go func() { defer wg.Done(); extPublish(1, live) }()
	for _, fault := range []func(){p.Cut, func() { m.Restart(t) }, p.Cut, p.Cut} {
		base := app.published.Load()
		if err := awaitProgress(func() bool { return app.published.Load() >= base+20 || app.published.Load() == out1 },
			func() uint64 { return uint64(app.published.Load()) }, nil); err != nil {
			t.Fatalf("run 1 publishing: %v", err)
		}
		fault()
	}
	waitGroup(t, &wg, func() uint64 { return uint64(app.published.Load()) })
	app.cli.Disconnect(250)
	run1 := app

	extPublish(live+1, away) // queued by the broker for the stopped app
	if err := drain(ext, nil); err != nil {
		t.Fatal(err)
	}
	app = startPahoApp(t, p.URL(), holdfast)
	app.publish(out1+1, out2)

	reached := func(prefix string) int {
		return distinctCount(append(run1.reached(prefix), app.reached(prefix)...))
	}
	outLost := func() int { return len(testsub.Check(seqs(1, out2), sub.Arrivals("mig/out")).Lost) }
	done := func() bool {
		return outLost() == 0 && reached("mig/in/x ") >= away && reached("mig/any/x ") >= away
	}
	measure := func() uint64 { return uint64(out2 - outLost() + reached("mig/in/x ") + reached("mig/any/x ")) }
	if err := awaitProgress(done, measure, nil); err != nil {
		t.Fatalf("published by the app %d/%d; reached its handlers %d/%d (QoS 1), %d/%d (QoS 2): %v",
			out2-outLost(), out2, reached("mig/in/x "), away, reached("mig/any/x "), away, err)
	}
	for _, a := range []*pahoApp{run1, app} {
		if errs := a.errs.list(); len(errs) > 0 {
			t.Fatalf("publish tokens failed: %v", errs)
		}
	}
	requireClean(t, "the app's publishes", testsub.Check(seqs(1, out2), sub.Arrivals("mig/out")), true)
	q2 := append(run1.reached("mig/any/x "), app.reached("mig/any/x ")...)
	if len(q2) != distinctCount(q2) {
		t.Fatalf("QoS 2 messages reached the app's handlers %d times for %d messages", len(q2), distinctCount(q2))
	}
	t.Logf("run 1: connects %d, lost %d; run 2: connects %d; default handler got %d of the %d queued while away",
		run1.connects.Load(), run1.lost.Load(), app.connects.Load(), len(app.dflt.list()), 2*(away-live))
}

// waitGroup waits for wg, failing when measure stops moving for stallTimeout.
func waitGroup(t *testing.T, wg *sync.WaitGroup, measure func() uint64) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	finished := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	if err := awaitProgress(finished, measure, nil); err != nil {
		t.Fatal(err)
	}
}
