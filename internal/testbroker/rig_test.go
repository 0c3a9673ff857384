package testbroker

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
)

// newProxy starts a fault proxy to target, closed by t.Cleanup.
func newProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// TestProxyCutFiresConnectionLost is issue 2's proof that a Cut between a
// paho client and Mosquitto is seen by the client as a lost connection (a
// reset), while traffic through the proxy works before it.
func TestProxyCutFiresConnectionLost(t *testing.T) {
	m := StartMosquitto(t, MosquittoOptions{})
	p := newProxy(t, m.Addr())

	c, _ := connect(t, p.URL(), clientOpts{id: "cut-me", keepAlive: 30 * time.Second})
	c.subscribe(t, "holdfast/cut", 1)
	c.publish(t, "holdfast/cut", 1, "through the proxy")
	Eventually(t, opTimeout, func() bool { return c.payloads()["through the proxy"] }, "message through the proxy")

	start := time.Now()
	p.Cut()
	err := c.waitLost(t, 5*time.Second)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection lost with %v; want a connection reset", err)
	}
	// With a 30s keepalive, only the reset itself can explain a quick loss.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("loss noticed after %v", d)
	}
	if s := p.Stats(); s.Cuts != 1 || s.BytesUp == 0 || s.BytesDown == 0 {
		t.Fatalf("proxy stats: %+v", s)
	}
	// The broker saw the reset as well.
	Eventually(t, opTimeout, func() bool {
		return strings.Contains(m.Log(), "Client cut-me closed its connection") ||
			strings.Contains(m.Log(), "Client cut-me disconnected")
	}, "broker notices the cut")
}

// TestBlackholeDetectedOnlyByKeepalive is issue 2's proof that a black hole
// is noticed only through keepalive: not before about one keepalive period,
// and within three (paho pings after one idle period and gives up after
// its ping timeout, here 1s: about 3.5s in all).
func TestBlackholeDetectedOnlyByKeepalive(t *testing.T) {
	const keepAlive = 2 * time.Second
	m := StartMosquitto(t, MosquittoOptions{})
	p := newProxy(t, m.Addr())
	c, _ := connect(t, p.URL(), clientOpts{id: "blackholed", keepAlive: keepAlive, pingTimeout: time.Second})

	start := time.Now()
	p.SetBlackhole(true)
	err := c.waitLost(t, 6*keepAlive)
	elapsed := time.Since(start)
	t.Logf("black hole noticed after %v: %v", elapsed, err)

	if err == nil || !strings.Contains(err.Error(), "pingresp not received") {
		t.Fatalf("connection lost with %v; want paho's keepalive timeout", err)
	}
	if elapsed < keepAlive {
		t.Fatalf("loss noticed after %v, before one keepalive period (%v): not by keepalive", elapsed, keepAlive)
	}
	if elapsed > 3*keepAlive {
		t.Fatalf("loss noticed after %v, more than 3 keepalive periods", elapsed)
	}
	if s := p.Stats(); s.Cuts != 0 {
		t.Fatalf("a black hole must not cut: %+v", s)
	}
	p.SetBlackhole(false)
}

// TestProxyOutageAgainstMosquitto shows an outage refusing MQTT connections
// and forwarding again when it ends.
func TestProxyOutageAgainstMosquitto(t *testing.T) {
	m := StartMosquitto(t, MosquittoOptions{})
	p := newProxy(t, m.Addr())
	c, _ := connect(t, p.URL(), clientOpts{id: "outage-live"})

	p.Outage(time.Hour)
	if err := c.waitLost(t, 5*time.Second); err == nil {
		t.Fatal("connection lost with a nil error")
	}
	if err := tryConnect(t, p.URL(), clientOpts{id: "outage-new"}); err == nil {
		t.Fatal("connected during the outage")
	}
	if p.Stats().Refused == 0 {
		t.Fatal("no refused connection counted")
	}
	p.SetRefuse(false)
	connect(t, p.URL(), clientOpts{id: "outage-after"})
}
