package client_test

import (
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

// What a paho program reads from its tokens (SessionPresent and ReturnCode
// of a connect, Result of a subscribe) is reachable through the adapter by
// asserting the token to an interface, which paho's own concrete tokens
// satisfy as well: the same code works with both. paho's concrete token
// types cannot be made outside paho (their fields and completion are
// unexported), so `tok.(*mqtt.ConnectToken)` cannot succeed.
type (
	connectResult interface {
		SessionPresent() bool
		ReturnCode() byte
	}
	subscribeResult interface{ Result() map[string]byte }
)

func TestPahoTokensAsInterfaces(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			id := "tokens-" + im.name
			topic := "tok/" + im.name
			opts := func() *mqtt.ClientOptions {
				return mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID(id).SetCleanSession(false)
			}
			for run, wantPresent := range []bool{false, true} {
				cli := im.new(t, opts())
				tok := cli.Connect()
				waitTok(t, "connect", tok)
				cr, ok := tok.(connectResult)
				if !ok {
					t.Fatalf("run %d: the connect token %T has no SessionPresent/ReturnCode", run, tok)
				}
				if cr.SessionPresent() != wantPresent || cr.ReturnCode() != 0 {
					t.Fatalf("run %d: SessionPresent %v ReturnCode %d, want %v and 0", run, cr.SessionPresent(), cr.ReturnCode(), wantPresent)
				}
				stok := cli.SubscribeMultiple(map[string]byte{topic + "/1": 1, topic + "/2": 2}, func(mqtt.Client, mqtt.Message) {})
				waitTok(t, "subscribe", stok)
				sr, ok := stok.(subscribeResult)
				if !ok {
					t.Fatalf("run %d: the subscribe token %T has no Result", run, stok)
				}
				if got := sr.Result(); got[topic+"/1"] != 1 || got[topic+"/2"] != 2 || len(got) != 2 {
					t.Fatalf("run %d: Result %v, want the granted QoS of each filter", run, got)
				}
				ptok := cli.Publish(topic+"/1", 1, false, "x")
				waitTok(t, "publish", ptok)
				if rt, ok := ptok.(interface{ Receipt() *client.Receipt }); ok {
					if rt.Receipt().Seq() == 0 {
						t.Fatal("the publish token's receipt has no sequence number")
					}
				} else if im.name == "holdfast" {
					t.Fatalf("the adapter's publish token %T has no Receipt", ptok)
				}
				cli.Disconnect(250)
			}
		})
	}
}
