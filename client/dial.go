package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"

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
	if ps := cfg.fromPaho; ps != nil && ps.openConn != nil {
		return ps.openConn(a.url, ps.opts) // paho's SetCustomOpenConnectionFn
	}
	ctx, cancel := context.WithTimeout(a.ctx, cfg.ConnectTimeout)
	defer cancel()
	u := a.url
	var d ContextDialer = &net.Dialer{}
	if cfg.Dialer != nil {
		d = cfg.Dialer
	}
	host := u.Host
	switch scheme := strings.ToLower(u.Scheme); scheme {
	case "tcp", "mqtt":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "1883")
		}
		return dialTCP(ctx, d, host)
	case "unix":
		path := u.Path
		if u.Host != "" { // unix://socket.sock: relative to the working directory, as in paho
			path = u.Host
		}
		return d.DialContext(ctx, "unix", path)
	case "ssl", "tls", "mqtts", "tcps", "mqtt+ssl":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "8883")
		}
		conn, err := dialTCP(ctx, d, host)
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
		var header http.Header
		opts := &mqtt.WebsocketOptions{} // a copy each time: paho's NewWebsocket fills in Proxy
		if w := cfg.WebSocket; w != nil {
			header = w.Header.Clone()
			opts.ReadBufferSize, opts.WriteBufferSize = w.ReadBufferSize, w.WriteBufferSize
			if w.Proxy != nil {
				opts.Proxy = w.Proxy
			}
		}
		return mqtt.NewWebsocket(dialURL.String(), a.tls, cfg.ConnectTimeout, header, opts)
	}
	return nil, fmt.Errorf("holdfast: unsupported broker scheme %q", u.Scheme)
}

// dialTCP opens a TCP connection through the SOCKS5 proxy that the
// environment names (ALL_PROXY, NO_PROXY), if any, as paho does.
func dialTCP(ctx context.Context, d ContextDialer, addr string) (net.Conn, error) {
	pd := proxy.FromEnvironmentUsing(forward{d, ctx})
	if cd, ok := pd.(proxy.ContextDialer); ok {
		return cd.DialContext(ctx, "tcp", addr)
	}
	return pd.Dial("tcp", addr)
}

// forward is a ContextDialer seen as a proxy.Dialer.
type forward struct {
	ContextDialer
	ctx context.Context
}

func (f forward) Dial(network, addr string) (net.Conn, error) {
	return f.DialContext(f.ctx, network, addr)
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
