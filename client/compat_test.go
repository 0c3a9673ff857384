package client_test

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

// TestPahoAdapterIsADropIn drives the client through paho's mqtt.Client
// interface, built from paho ClientOptions, as migrating code would.
func TestPahoAdapterIsADropIn(t *testing.T) {
	b := testbroker.StartEmbedded(t)
	opts := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("compat").SetCleanSession(false).SetKeepAlive(5 * time.Second)
	cfg := client.FromPaho(opts, t.TempDir())
	if cfg.ClientID != "compat" || len(cfg.Brokers) != 1 || cfg.KeepAlive != 5*time.Second {
		t.Fatalf("FromPaho: %+v", cfg)
	}
	hf, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var cli mqtt.Client = hf.Paho()
	defer cli.Disconnect(1000)
	if tok := cli.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("Connect: %v", tok.Error())
	}
	got := make(chan string, 4)
	if tok := cli.Subscribe("compat/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("Subscribe: %v", tok.Error())
	}
	tok := cli.Publish("compat/a", 1, false, "1 hello")
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("Publish token: %v", tok.Error())
	}
	if hf.Stats().Acked < 1 {
		t.Fatalf("the QoS 1 token completed before the broker's acknowledgement: %+v", hf.Stats())
	}
	select {
	case p := <-got:
		if p != "1 hello" {
			t.Fatalf("received %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber callback not called")
	}
	if tok := cli.Publish("compat/#", 1, false, "x"); !tok.WaitTimeout(time.Second) || tok.Error() == nil {
		t.Fatal("an invalid topic was accepted through the adapter")
	}
	if !cli.IsConnected() || !cli.IsConnectionOpen() {
		t.Fatal("adapter reports not connected")
	}
}
