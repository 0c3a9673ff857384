package client

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"net/url"
	"strings"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// wireConn is the connection paho writes to. paho writes every packet with
// one Write call, so each Write is one whole MQTT packet. It observes the
// PUBREL of outbound QoS 2 messages, which paho never reports to its Store,
// and records it durably before the PUBREL leaves: after a reconnect or a
// restart the exchange then resumes with the PUBREL instead of a PUBLISH
// that the broker would take for a new message.
type wireConn struct {
	net.Conn
	d   *dispatcher
	gen uint64 // connection generation (dispatcher.dialed)
}

const (
	ptypePublish = 3
	ptypePubrel  = 6
)

func (w *wireConn) Write(b []byte) (int, error) {
	if len(b) >= 4 && b[0]>>4 == ptypePubrel && b[1] == 2 {
		id := binary.BigEndian.Uint16(b[2:4])
		if err := w.d.released(id); err != nil {
			// Not durable: do not let the PUBREL go. The connection fails,
			// and the resume resends the PUBLISH, which the broker still
			// holds under this identifier and so deduplicates.
			return 0, fmt.Errorf("holdfast: recording PUBREL %d: %w", id, err)
		}
	} else if len(b) > 0 && b[0]>>4 == ptypePublish && b[0]&0x06 != 0 {
		dup := b[0]&0x08 != 0
		if id, ok := publishID(b); ok && w.d.stale(id, w.gen, dup) {
			// A leftover: a first send queued in paho before the reconnect
			// (paho's resume resends it with DUP, in order), or a copy of a
			// message the broker already has. Writing it would reorder or
			// duplicate; it is dropped, which paho cannot tell from a write.
			w.d.stats.suppressed.Add(1)
			return len(b), nil
		}
		if dup {
			w.d.stats.resent.Add(1)
		}
	}
	return w.Conn.Write(b)
}

// publishID returns the packet identifier of a QoS 1/2 PUBLISH packet.
func publishID(b []byte) (uint16, bool) {
	i := 1
	for ; i < len(b) && i < 5; i++ { // remaining length: 1 to 4 bytes
		if b[i]&0x80 == 0 {
			break
		}
	}
	i++
	if i+2 > len(b) {
		return 0, false
	}
	i += 2 + int(binary.BigEndian.Uint16(b[i:]))
	if i+2 > len(b) {
		return 0, false
	}
	return binary.BigEndian.Uint16(b[i:]), true
}

// dial opens a network connection to broker, as paho would, and wraps it.
func dial(broker string, cfg *Config) (net.Conn, error) {
	u, err := url.Parse(broker)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: cfg.ConnectTimeout}
	host := u.Host
	scheme := strings.ToLower(u.Scheme)
	switch scheme {
	case "tcp", "mqtt":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "1883")
		}
		return d.Dial("tcp", host)
	case "ssl", "tls", "mqtts", "tcps":
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "8883")
		}
		tc := cfg.TLS.Clone()
		if tc == nil {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		return tls.DialWithDialer(d, "tcp", host, tc)
	case "ws", "wss":
		var tc *tls.Config
		if scheme == "wss" {
			tc = cfg.TLS.Clone()
		}
		return mqtt.NewWebsocket(u.String(), tc, cfg.ConnectTimeout, nil, nil)
	}
	return nil, fmt.Errorf("holdfast: unsupported broker scheme %q", u.Scheme)
}
