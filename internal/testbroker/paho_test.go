package testbroker

import (
	"crypto/tls"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// opTimeout bounds every paho token wait in these tests.
const opTimeout = 5 * time.Second

// client is a paho client for tests, with its connection-lost events and the
// messages it receives recorded.
type client struct {
	paho.Client
	lost chan error // receives each connection-lost error

	mu       sync.Mutex // guards received
	received []paho.Message
}

// clientOpts are the settings a test may vary.
type clientOpts struct {
	id           string
	persistent   bool // clean-session false
	user, pass   string
	tls          *tls.Config
	keepAlive    time.Duration
	pingTimeout  time.Duration
	connectError bool // expect the connect to fail; do not Fatal
}

func newClient(url string, o clientOpts) *client {
	c := &client{lost: make(chan error, 4)}
	opts := paho.NewClientOptions().
		AddBroker(url).
		SetClientID(o.id).
		SetCleanSession(!o.persistent).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(opTimeout).
		SetOrderMatters(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			c.mu.Lock()
			c.received = append(c.received, m)
			c.mu.Unlock()
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) { c.lost <- err })
	if o.user != "" {
		opts.SetUsername(o.user).SetPassword(o.pass)
	}
	if o.tls != nil {
		opts.SetTLSConfig(o.tls)
	}
	if o.keepAlive > 0 {
		opts.SetKeepAlive(o.keepAlive)
	}
	if o.pingTimeout > 0 {
		opts.SetPingTimeout(o.pingTimeout)
	}
	c.Client = paho.NewClient(opts)
	return c
}

// connect connects a new client and fails the test if that fails. The client
// is disconnected by t.Cleanup.
func connect(t testing.TB, url string, o clientOpts) (*client, *paho.ConnectToken) {
	t.Helper()
	c := newClient(url, o)
	tok := c.Connect()
	if !tok.WaitTimeout(opTimeout) {
		t.Fatalf("connect %q to %s: timed out", o.id, url)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("connect %q to %s: %v", o.id, url, err)
	}
	t.Cleanup(func() { c.disconnect() })
	return c, tok.(*paho.ConnectToken)
}

// tryConnect connects a new client and returns the connect error.
func tryConnect(t testing.TB, url string, o clientOpts) error {
	t.Helper()
	c := newClient(url, o)
	tok := c.Connect()
	if !tok.WaitTimeout(opTimeout) {
		t.Fatalf("connect %q to %s: timed out", o.id, url)
	}
	if tok.Error() == nil {
		c.disconnect()
	}
	return tok.Error()
}

func (c *client) disconnect() {
	if c.IsConnectionOpen() {
		c.Disconnect(100)
	}
}

func (c *client) subscribe(t testing.TB, topic string, qos byte) {
	t.Helper()
	tok := c.Subscribe(topic, qos, nil) // messages go to the default handler
	if !tok.WaitTimeout(opTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
}

func (c *client) publish(t testing.TB, topic string, qos byte, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(opTimeout) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// payloads returns the distinct payloads received so far.
func (c *client) payloads() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]bool, len(c.received))
	for _, m := range c.received {
		out[string(m.Payload())] = true
	}
	return out
}

// waitLost waits for the connection-lost handler and returns its error.
func (c *client) waitLost(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-c.lost:
		return err
	case <-time.After(timeout):
		t.Fatalf("connection-lost handler did not fire within %v", timeout)
		return nil
	}
}
