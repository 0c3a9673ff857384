package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/outbox"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// Config configures a Client. The zero value of every field means the
// documented default; New copies the Config, fills the defaults and
// validates it once.
type Config struct {
	// Brokers are the broker URLs, tried in turn (failover). Schemes:
	// tcp:// or mqtt:// (plain), ssl://, tls://, mqtts://, tcps:// or
	// mqtt+ssl:// (TLS), ws:// and wss:// (WebSocket), unix:///path (a Unix
	// socket). User information in a URL (tcp://user:password@host) is the
	// credentials for that broker, as in paho. Required.
	Brokers []string

	// ClientID identifies the session to the broker. With a durable outbox
	// (OutboxDir set) it is required and must be stable across restarts:
	// the broker keeps the session (clean-session=false) under this
	// identifier, and exactly-once QoS 2 depends on it. 1..23 characters
	// are safe with every broker; longer ones work with most.
	ClientID string

	// OutboxDir is the directory of the durable outbox (Badger). Empty
	// means an in-memory outbox: publishes survive disconnects but not a
	// process restart, and the session is still persistent only if
	// PersistentSession is set.
	OutboxDir string

	// Outbox, when set, is used instead of opening OutboxDir. The client
	// does not close a Queue it did not open. The inbound QoS 2 ledger
	// (see Handler) then lives in memory: set OutboxDir instead for it to
	// survive a restart.
	Outbox outbox.Queue

	// Durability of each Publish, for a durable outbox. Default
	// outbox.GroupCommit: fsynced before Publish returns, with concurrent
	// publishers sharing one fsync.
	Durability outbox.Durability

	// Profile tunes the outbox's storage engine: outbox.ProfileDevice
	// (small memory) or outbox.ProfileServer (throughput). Default: the
	// outbox package's default.
	Profile outbox.Profile

	// MaxQueued, MaxQueuedBytes and TTL bound the outbox (records, bytes of
	// payload and topic, age). Zero means unbounded. Overflow chooses what
	// happens at a limit: outbox.OverflowReject (default; Publish returns
	// ErrOutboxFull), outbox.OverflowBlock (Publish waits for room until its
	// context ends) or outbox.OverflowDropOldest (the oldest unsent message
	// is dropped, counted and reported through Hooks.OnDrop).
	MaxQueued      int
	MaxQueuedBytes int64
	TTL            time.Duration
	Overflow       outbox.Overflow

	// EncryptionKey encrypts the outbox at rest (AES, 16, 24 or 32 bytes).
	// Opening an outbox with another key fails with outbox.ErrBadKey.
	EncryptionKey []byte

	// PersistentSession asks for clean-session=false with an in-memory
	// outbox. With OutboxDir set the session is always persistent.
	PersistentSession bool

	// KeepAlive is the MQTT keepalive. Default 30s. A link that passes no
	// bytes (a black hole) is detected after about 1.5x KeepAlive.
	KeepAlive time.Duration

	// ConnectTimeout bounds one connection attempt (dial, TLS, CONNACK).
	// Default 10s.
	ConnectTimeout time.Duration

	// WriteTimeout bounds one write to the network. Default 10s.
	WriteTimeout time.Duration

	// PingTimeout is how long a PINGRESP may be awaited before the
	// connection is taken as lost. Default KeepAlive/4: paho pings after
	// KeepAlive of silence and checks every KeepAlive/4 (at most 5s), so a
	// black-holed link is noticed after about 1.5x KeepAlive.
	PingTimeout time.Duration

	// Dialer opens the network connections of tcp://, mqtt://, TLS and
	// unix:// brokers (TLS runs over the connection it returns); a
	// *net.Dialer or a proxy dialer fits. Each dial is bounded by
	// ConnectTimeout through its context. Nil: a net.Dialer. For tcp://
	// and TLS brokers the SOCKS5 proxy of the environment (ALL_PROXY,
	// NO_PROXY) is used on top of it, as paho does. WebSocket connections
	// are opened by the WebSocket library instead (see WebSocket).
	Dialer ContextDialer

	// WebSocket configures ws:// and wss:// connections. Nil: no extra
	// HTTP header, default buffer sizes, the HTTP proxy of the environment
	// (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), as in paho.
	WebSocket *WebSocketOptions

	// TLS is the TLS configuration for ssl://, tls://, mqtts://, tcps://,
	// mqtt+ssl:// and wss:// brokers. Nil means the system roots and TLS 1.2
	// or later. The broker's certificate is always verified: a configuration
	// with InsecureSkipVerify is refused unless Config.InsecureSkipVerify is
	// set too. An empty ServerName is the broker URL's host name, which is
	// both verified and sent as SNI. The configuration is cloned at each
	// attempt; TLSFiles, when set, fills in its RootCAs and Certificates.
	// Exclusive with GetTLSConfig.
	TLS *tls.Config

	// TLSFiles names PEM files read at every connection attempt to a TLS
	// broker, so that a certificate rotated on disk is used from the next
	// connection without a restart. New reads them once and refuses files
	// it cannot use (ErrInvalidConfig); at an attempt, a file that cannot be
	// read (a rotation half done) fails that attempt, which is retried with
	// backoff. Nil: none. Exclusive with GetTLSConfig.
	TLSFiles *TLSFiles

	// GetTLSConfig, when set, is called once per connection attempt to a
	// TLS broker, with the attempt's context and the broker URL, for the
	// configuration to use (nil: the defaults of TLS). An error fails the
	// attempt: it is retried with backoff unless it wraps
	// reconnect.Permanent. The configuration returned is cloned and must
	// not skip verification unless Config.InsecureSkipVerify is set (else
	// the attempt fails permanently with ErrInvalidConfig). Exclusive with
	// TLS and TLSFiles.
	GetTLSConfig func(ctx context.Context, broker string) (*tls.Config, error)

	// InsecureSkipVerify turns the verification of the broker's
	// certificate OFF: any server, including an attacker in the middle, is
	// accepted. For tests only. It is the only way to connect without
	// verification; New logs a warning when it is set.
	InsecureSkipVerify bool

	// Username and Password authenticate to the broker. They are never
	// logged, nor shown in errors or Stats. A broker URL's user information
	// (tcp://user:password@host), as in paho, takes their place for that
	// broker; Credentials takes the place of both.
	Username string
	Password string

	// Credentials, when set, is called once per connection attempt, with
	// the attempt's context, for the user name and password of that
	// CONNECT: for tokens that expire (JWTs of cloud IoT brokers), fetch or
	// mint a fresh one here. An error fails the attempt with an error
	// wrapping ErrCredentials, retried with backoff unless it wraps
	// reconnect.Permanent. A password without a user name (which MQTT 3.1.1
	// cannot carry) fails the attempt permanently with ErrInvalidConfig. It
	// is called from the supervisor's goroutine, one call at a time.
	Credentials func(ctx context.Context) (username, password string, err error)

	// Will is the last-will message, sent by the broker if this client
	// vanishes without disconnecting. Nil means none.
	Will *Will

	// Backoff is the reconnection policy; see reconnect.Policy for its
	// defaults (exponential with jitter, never giving up).
	Backoff reconnect.Policy

	// MaxInflight bounds the QoS 1 and 2 messages sent and not yet
	// acknowledged, resends after a reconnect included. Default 512;
	// at most 65,535.
	MaxInflight int

	// MaxInflightQoS2 bounds the QoS 2 messages whose exchange is not
	// complete. It must not exceed the broker's receive quota: past it
	// Mosquitto drops QoS 2 messages while still acknowledging them. The
	// default, 20, is Mosquitto's max_inflight_messages default.
	MaxInflightQoS2 int

	// MaxPending bounds the PublishAsync messages handed over and not yet
	// durable (each holds its payload in memory until its commit). Past
	// it, PublishAsync waits for a commit or for its context. Default
	// 1,024.
	MaxPending int

	// QoS0 chooses what a QoS 0 Publish does while disconnected:
	// QoS0Reject (default) returns ErrNotConnected; QoS0Queue stores it in
	// the outbox like any message, to be sent once connected.
	QoS0 QoS0Policy

	// MaxPayload bounds the payload of one message. Default 1 MiB; at most
	// the MQTT limit of 256 MiB less the topic and header. The outbox is
	// sized for it (the device profile holds records up to 4 MiB: larger
	// values need outbox.ProfileServer).
	MaxPayload int

	// Logger receives structured logs. Nil discards them. Payloads and
	// credentials are never logged above debug level.
	Logger *slog.Logger

	// Subscriptions are made on every connection whose broker session is
	// new, and routed from the start, so messages the broker queued while
	// this client was away reach their handler. See also Subscribe.
	Subscriptions []Subscription

	// DefaultHandler receives the inbound messages that match no
	// subscription's filter: messages the broker queued for a subscription
	// this run has not made (yet), or that an Unsubscribe overtook. Nil
	// means such a message is acknowledged at once, logged and counted in
	// Stats.Unrouted, so that it cannot hold the broker's window.
	DefaultHandler Handler

	// HandlerConcurrency is how many inbound messages are handled at once.
	// 0 or 1 (default): one at a time, in arrival order. More: up to that
	// many at once, in no particular order (paho's SetOrderMatters(false)).
	HandlerConcurrency int

	// HandlerRetries is how many more times a message is offered to a
	// handler that refused it (returned an error), waiting HandlerBackoff
	// before the first retry and twice as long before each next one, up to
	// 10s. Default 5; -1 means no retry. After the last refusal the message
	// goes to DeadLetter and is acknowledged. While a message is retried the
	// messages after it wait (unless HandlerConcurrency > 1).
	HandlerRetries int

	// HandlerBackoff is the wait before the first retry of a refused
	// message. Default 100ms.
	HandlerBackoff time.Duration

	// DeadLetter receives a message that a handler still refused after
	// HandlerRetries, with the last error; the message is acknowledged when
	// it returns, so a poison message neither stalls the stream nor comes
	// back. Nil means the message is logged (at error level, without its
	// payload) and counted in Stats.DeadLettered. It is called on the
	// handler's goroutine and must be safe for concurrent use when
	// HandlerConcurrency > 1.
	DeadLetter func(ctx context.Context, m Message, err error)

	// Hooks are optional callbacks; see Hooks.
	Hooks Hooks

	// PahoOptions, when set, is called last on the paho ClientOptions the
	// client built, to set what Config does not expose. Holdfast's own
	// choices (clean session, store, auto-reconnect off, connection
	// function, handlers) are restored after it, because the guarantees
	// depend on them.
	PahoOptions func(*mqtt.ClientOptions)

	// fromPaho holds what FromPaho keeps of paho options beyond the fields
	// above (compat.go).
	fromPaho *pahoSettings
}

// ContextDialer opens network connections: *net.Dialer is one, and so are
// the dialers of golang.org/x/net/proxy.
type ContextDialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// WebSocketOptions configures ws:// and wss:// connections (paho's
// SetHTTPHeaders and SetWebsocketOptions).
type WebSocketOptions struct {
	// Header is sent with the HTTP upgrade request (an API gateway's key,
	// for instance). It is never logged.
	Header http.Header
	// ReadBufferSize and WriteBufferSize are the WebSocket library's I/O
	// buffer sizes; 0 means its default (4 KiB).
	ReadBufferSize  int
	WriteBufferSize int
	// Proxy returns the HTTP proxy of a request, or nil for none. Nil:
	// http.ProxyFromEnvironment.
	Proxy func(*http.Request) (*url.URL, error)
}

// TLSFiles names PEM files for TLS, read at every connection attempt.
type TLSFiles struct {
	// CAFile holds the certificates of the authorities trusted to sign the
	// broker's certificate; they replace Config.TLS's RootCAs (and the
	// system roots). Empty: Config.TLS's RootCAs, or the system roots.
	CAFile string
	// CertFile and KeyFile hold the client certificate (with its chain)
	// and its private key, for brokers that require mutual TLS; both or
	// neither. They replace Config.TLS's Certificates. The key is never
	// logged nor put in an error.
	CertFile string
	KeyFile  string
}

// Will is a last-will message.
type Will struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
}

// QoS0Policy chooses what a QoS 0 Publish does while disconnected.
type QoS0Policy int

const (
	// QoS0Reject returns ErrNotConnected while disconnected.
	QoS0Reject QoS0Policy = iota
	// QoS0Queue stores QoS 0 messages in the outbox while disconnected.
	QoS0Queue
)

// Hooks are optional callbacks. They are called from the client's
// goroutines: they must be fast, must not block, and must be safe for
// concurrent use.
//
// Hooks run on the client's own goroutines (paho's reader for OnAck, the
// outbox's committer or expiry timer or a Publish call for OnDrop, the
// supervisor for OnConnection), synchronously: they must be fast and must
// not block. They may call Stats, IsConnected and Publish with the
// OverflowReject policy; they must not call Close, Flush, AwaitConnected
// or wait on a Receipt, which wait for the very goroutine running the
// hook (start a goroutine for those: `go c.Close(ctx)`).
type Hooks struct {
	// OnConnection is called on every connection state change, with the
	// cause (dial error, refusal, keepalive timeout, EOF).
	OnConnection func(reconnect.Event)
	// OnDrop is called for every message removed from the outbox unsent:
	// dropped by the overflow policy or expired. reason wraps ErrDropped.
	OnDrop func(seq uint64, reason error)
	// OnAck is called when the broker acknowledged a message (PUBACK, or
	// PUBCOMP for QoS 2).
	OnAck func(seq uint64)
}

const (
	defaultKeepAlive       = 30 * time.Second
	defaultConnectTimeout  = 10 * time.Second
	defaultWriteTimeout    = 10 * time.Second
	defaultMaxInflight     = 512
	defaultMaxInflightQoS2 = 20
	defaultMaxPending      = 1024
	maxPacketPayload       = 268435455
	defaultMaxPayload      = 1 << 20
)

// validate copies defaults into c and returns an error wrapping
// ErrInvalidConfig when the configuration cannot work.
func (c *Config) validate() error {
	if err := c.validateReceive(); err != nil { // inbound.go
		return err
	}
	if len(c.Brokers) == 0 {
		return fmt.Errorf("%w: no broker URL", ErrInvalidConfig)
	}
	for _, b := range c.Brokers {
		u, err := url.Parse(b)
		if err != nil {
			return fmt.Errorf("%w: broker %q: %v", ErrInvalidConfig, redactURL(b), redactErr(err))
		}
		switch strings.ToLower(u.Scheme) {
		case "tcp", "mqtt", "ssl", "tls", "mqtts", "tcps", "mqtt+ssl", "ws", "wss":
			if u.Host == "" {
				return fmt.Errorf("%w: broker %q: no host", ErrInvalidConfig, redactURL(b))
			}
		case "unix":
			if u.Host == "" && u.Path == "" {
				return fmt.Errorf("%w: broker %q: no socket path", ErrInvalidConfig, redactURL(b))
			}
		default:
			return fmt.Errorf("%w: broker %q: unsupported scheme %q", ErrInvalidConfig, redactURL(b), u.Scheme)
		}
	}
	if err := c.validateTLS(); err != nil { // security.go
		return err
	}
	if c.persistentSession() {
		if c.ClientID == "" {
			return fmt.Errorf("%w: a persistent session (durable outbox) needs a stable ClientID", ErrInvalidConfig)
		}
	}
	if !utf8.ValidString(c.ClientID) || len(c.ClientID) > 65535 {
		return fmt.Errorf("%w: ClientID is not valid UTF-8 within 65,535 bytes", ErrInvalidConfig)
	}
	if c.Password != "" && c.Username == "" {
		return fmt.Errorf("%w: Password without Username", ErrInvalidConfig)
	}
	if c.Will != nil {
		if err := checkTopic(c.Will.Topic); err != nil {
			return fmt.Errorf("%w: will: %v", ErrInvalidConfig, err)
		}
		if c.Will.QoS > 2 {
			return fmt.Errorf("%w: will QoS %d", ErrInvalidConfig, c.Will.QoS)
		}
	}
	switch {
	case c.KeepAlive < 0, c.ConnectTimeout < 0, c.WriteTimeout < 0, c.TTL < 0, c.PingTimeout < 0:
		return fmt.Errorf("%w: negative duration", ErrInvalidConfig)
	case c.MaxPending < 0:
		return fmt.Errorf("%w: negative MaxPending", ErrInvalidConfig)
	case c.MaxInflight < 0 || c.MaxInflight > 65535:
		return fmt.Errorf("%w: MaxInflight %d outside 0..65535", ErrInvalidConfig, c.MaxInflight)
	case c.MaxInflightQoS2 < 0:
		return fmt.Errorf("%w: MaxInflightQoS2 %d", ErrInvalidConfig, c.MaxInflightQoS2)
	case c.MaxQueued < 0 || c.MaxQueuedBytes < 0 || c.MaxPayload < 0:
		return fmt.Errorf("%w: negative limit", ErrInvalidConfig)
	case c.KeepAlive > 0 && c.KeepAlive < time.Second:
		return fmt.Errorf("%w: KeepAlive %v is under one second (MQTT counts it in seconds)", ErrInvalidConfig, c.KeepAlive)
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = defaultKeepAlive
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = c.KeepAlive / 4
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = defaultConnectTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = defaultWriteTimeout
	}
	if c.MaxPending == 0 {
		c.MaxPending = defaultMaxPending
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = defaultMaxInflight
	}
	if c.MaxInflightQoS2 == 0 {
		c.MaxInflightQoS2 = defaultMaxInflightQoS2
	}
	if c.MaxInflightQoS2 > c.MaxInflight {
		c.MaxInflightQoS2 = c.MaxInflight
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = defaultMaxPayload
	}
	if c.MaxPayload > maxPacketPayload {
		c.MaxPayload = maxPacketPayload
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Brokers = append([]string(nil), c.Brokers...)
	return nil
}

// persistentSession reports whether the client connects with
// clean-session=false: always with a durable outbox, and on request with
// an in-memory one.
func (c *Config) persistentSession() bool {
	return c.OutboxDir != "" || c.Outbox != nil || c.PersistentSession
}
