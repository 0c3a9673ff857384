package reconnect_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// device connects a real paho client the way Holdfast's client does: paho's
// own AutoReconnect and ConnectRetry off, a persistent session, and a
// ConnectionLostHandler that closes the Conn's Done. Each attempt builds a new
// paho client for the broker URL it is given (so failover works).
type device struct {
	id          string
	user, pass  string
	keepAlive   time.Duration // default 30s
	pingTimeout time.Duration // default 10s
	// mapRefusals: report CONNACK refusals as *reconnect.RefusedError.
	// Otherwise paho's own error is returned and Config.IsPermanent must
	// classify it (see pahoIsPermanent).
	mapRefusals bool

	attempts atomic.Int64

	mu      sync.Mutex // guards clients
	clients []mqtt.Client
}

// pahoConn is the reconnect.Conn of one paho connection.
type pahoConn struct {
	done           chan struct{}
	once           sync.Once
	mu             sync.Mutex // guards err
	err            error
	sessionPresent bool
	lostAt         atomic.Int64 // unix nanos when paho reported the loss
}

func (c *pahoConn) Done() <-chan struct{} { return c.done }

func (c *pahoConn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *pahoConn) lost(err error) {
	c.once.Do(func() {
		c.lostAt.Store(time.Now().UnixNano())
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	})
}

// pahoIsPermanent is a Config.IsPermanent classifier for paho's refusal errors.
func pahoIsPermanent(err error) bool {
	return errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) ||
		errors.Is(err, packets.ErrorRefusedNotAuthorised) ||
		errors.Is(err, packets.ErrorRefusedIDRejected) ||
		errors.Is(err, packets.ErrorRefusedBadProtocolVersion)
}

func (d *device) connect(ctx context.Context, broker string) (reconnect.Conn, error) {
	d.attempts.Add(1)
	pc := &pahoConn{done: make(chan struct{})}
	ka, pt := d.keepAlive, d.pingTimeout
	if ka == 0 {
		ka = 30 * time.Second
	}
	if pt == 0 {
		pt = 10 * time.Second
	}
	o := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(d.id).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetCleanSession(false).
		SetProtocolVersion(4). // no silent fallback to 3.1 after a refusal
		SetKeepAlive(ka).
		SetPingTimeout(pt).
		SetConnectTimeout(2 * time.Second).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { pc.lost(err) })
	if d.user != "" {
		o.SetUsername(d.user).SetPassword(d.pass)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		// paho cannot abort a CONNECT: wait for it (bounded by the connect
		// timeout) and release a connection that came up anyway.
		<-tok.Done()
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		ct := tok.(*mqtt.ConnectToken)
		if rc := ct.ReturnCode(); d.mapRefusals && rc != packets.Accepted && rc < packets.ErrNetworkError {
			return nil, &reconnect.RefusedError{Code: reconnect.ConnackCode(rc), Err: err}
		}
		return nil, err
	}
	pc.sessionPresent = tok.(*mqtt.ConnectToken).SessionPresent()
	d.mu.Lock()
	d.clients = append(d.clients, c)
	d.mu.Unlock()
	return pc, nil
}

// close disconnects every paho client this device connected (the supervisor
// never closes a Conn: its owner does).
func (d *device) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.clients {
		if c.IsConnectionOpen() {
			c.Disconnect(0)
		}
	}
	d.clients = nil
}

// startDevice starts a supervisor for d; Close and d.close run at cleanup.
func startDevice(t *testing.T, d *device, p reconnect.Policy, brokers ...string) (*reconnect.Supervisor, *recorder) {
	t.Helper()
	r := &recorder{}
	cfg := reconnect.Config{Brokers: brokers, Connect: d.connect, Policy: p, OnEvent: r.on}
	if !d.mapRefusals {
		cfg.IsPermanent = pahoIsPermanent
	}
	s, err := reconnect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		d.close()
	})
	s.Start()
	return s, r
}
