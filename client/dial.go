package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// attempt is what one connection attempt uses. Client.connect prepares it,
// with the attempt's context, before paho dials: paho's hooks (the
// connection function, the credentials provider) take no context.
type attempt struct {
	ctx    context.Context
	broker string
	url    *url.URL
	tls    *tls.Config // nil unless the scheme runs over TLS

	// user and pass are the credentials of the CONNECT (see
	// Config.Credentials), handed to paho through its credentials provider.
	user, pass string
}

// prepare builds the attempt at broker: the credentials are taken (and
// Config.Credentials called) and the TLS configuration made (and TLSFiles
// read) now, once per attempt, so that a new token or a rotated certificate
// is used.
func (c *Client) prepare(ctx context.Context, broker string) (*attempt, error) {
	u, err := url.Parse(broker)
	if err != nil {
		return nil, redactErr(err)
	}
	a := &attempt{ctx: ctx, broker: broker, url: u}
	switch {
	case c.cfg.Credentials != nil:
		if a.user, a.pass, err = c.cfg.Credentials(ctx); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrCredentials, err)
		}
		if a.user == "" && a.pass != "" {
			return nil, reconnect.Permanent(fmt.Errorf("%w: Credentials returned a password without a user name", ErrInvalidConfig))
		}
	case u.User != nil:
		a.user = u.User.Username()
		a.pass, _ = u.User.Password()
	default:
		a.user, a.pass = c.cfg.Username, c.cfg.Password
	}
	if tlsNeeded(strings.ToLower(u.Scheme)) {
		if a.tls, err = c.cfg.tlsFor(ctx, broker, u); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// dial opens the network connection of attempt a, as paho would.
func dial(a *attempt, cfg *Config) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(a.ctx, cfg.ConnectTimeout)
	defer cancel()
	u := a.url
	d := &net.Dialer{}
	host := u.Host
	switch scheme := strings.ToLower(u.Scheme); scheme {
	case "tcp", "mqtt":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "1883")
		}
		return d.DialContext(ctx, "tcp", host)
	case "ssl", "tls", "mqtts", "tcps", "mqtt+ssl":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "8883")
		}
		conn, err := d.DialContext(ctx, "tcp", host)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(conn, a.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return &tlsConn{Conn: tc}, nil
	case "ws", "wss":
		dialURL := *u // as paho: the WebSocket library refuses user information
		dialURL.User = nil
		return mqtt.NewWebsocket(dialURL.String(), a.tls, cfg.ConnectTimeout, nil, nil)
	}
	return nil, fmt.Errorf("holdfast: unsupported broker scheme %q", u.Scheme)
}

// tlsConn reports the broker's TLS alert rather than the write error it
// causes. With TLS 1.3 the client's handshake ends before the broker has
// checked the client certificate: a broker that refuses it sends an alert
// and closes, and the CONNECT written meanwhile may fail with "connection
// reset by peer", a transient error, while the alert that says why (a
// permanent refusal) waits unread.
type tlsConn struct {
	*tls.Conn
	read atomic.Bool // a Read returned data: past the broker's verdict
}

// alertProbe bounds the read for an alert after a failed write.
const alertProbe = 200 * time.Millisecond

func (c *tlsConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Store(true)
	}
	return n, err
}

func (c *tlsConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && !c.read.Load() {
		// The connection is lost anyway: read what the broker sent before
		// (crypto/tls keeps a read error, so an alert that paho's reader
		// already took is returned again).
		_ = c.Conn.SetReadDeadline(time.Now().Add(alertProbe))
		var b [1]byte
		if _, rerr := c.Conn.Read(b[:]); rerr != nil {
			if _, ok := remoteAlert(rerr); ok {
				err = fmt.Errorf("%w (%w)", rerr, err)
			}
		}
	}
	return n, err
}
