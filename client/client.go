package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/outbox"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// Client is a durable MQTT publisher and subscriber over paho.mqtt.golang.
// It is safe for concurrent use. Create it with New and stop it with Close.
type Client struct {
	cfg  Config
	log  *slog.Logger
	q    outbox.Queue
	ownQ bool
	d    *dispatcher
	paho mqtt.Client
	sup  *reconnect.Supervisor

	// sendMu serialises the dispatcher's paho.Publish with the final
	// Disconnect. A publish blocked in paho across a reconnect is filtered
	// by wireConn (see dispatcher.beforePublish), so connecting never waits for it.
	sendMu sync.Mutex

	sess atomic.Pointer[session]  // the current connection attempt or connection
	conn atomic.Pointer[wireConn] // the current network connection
	att  atomic.Pointer[attempt]  // the current connection attempt: broker, TLS configuration (dial.go)

	stats   counters
	closing atomic.Bool
	pending chan struct{} // a slot per PublishAsync message not yet durable (Config.MaxPending)

	rx receiver // the inbound side: routes, subscriptions, handlers (inbound.go, subscribe.go)

	ctx       context.Context // cancelled by Close; owns the dispatcher
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	stopState context.CancelFunc // stops the state persister, after paho
	stateWG   sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New builds a client from cfg, opens its outbox, resumes what an earlier
// run left in flight, and starts connecting in the background. It returns
// without waiting for a connection: Publish works at once. Errors wrap
// ErrInvalidConfig, or an outbox error (outbox.ErrLocked, outbox.ErrBadKey,
// outbox.ErrCorrupt, ...).
func New(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: cfg.Logger, pending: make(chan struct{}, cfg.MaxPending)}
	if cfg.InsecureSkipVerify {
		c.log.Warn("holdfast: Config.InsecureSkipVerify is set: the broker's certificate is NOT verified (tests only)")
	}
	// The dispatcher exists before the outbox opens: records that expire
	// while it opens are reported through it (Stats, Hooks.OnDrop).
	c.d = newDispatcher(&c.cfg, &c.stats)
	if err := c.openOutbox(); err != nil {
		if errors.Is(err, outbox.ErrInvalidOptions) {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		return nil, err
	}
	c.d.attach(c.q)
	if err := c.d.load(); err != nil {
		c.closeOutbox()
		return nil, fmt.Errorf("holdfast: resuming the outbox: %w", err)
	}
	c.paho = mqtt.NewClient(c.pahoOptions())
	sup, err := reconnect.New(reconnect.Config{
		Brokers: cfg.Brokers,
		Connect: c.connect,
		Policy:  cfg.Backoff,
		OnEvent: c.onEvent,
		Logger:  cfg.Logger,
	})
	if err != nil {
		c.closeOutbox()
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	c.sup = sup
	if err := c.initReceiver(); err != nil {
		c.closeOutbox()
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	pctx, stopState := context.WithCancel(context.Background())
	c.stopState = stopState
	c.stateWG.Add(1)
	go func() {
		defer c.stateWG.Done()
		c.d.persist.run(pctx)
	}()
	c.startReceiver()
	c.sup.Start()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run(c.ctx)
	}()
	return c, nil
}

func (c *Client) openOutbox() error {
	if c.cfg.Outbox != nil {
		c.q = c.cfg.Outbox
		return nil
	}
	opts := outbox.Options{
		Durability:    c.cfg.Durability,
		Profile:       c.cfg.Profile,
		MaxRecords:    c.cfg.MaxQueued,
		MaxBytes:      c.cfg.MaxQueuedBytes,
		DefaultTTL:    c.cfg.TTL,
		Overflow:      c.cfg.Overflow,
		EncryptionKey: c.cfg.EncryptionKey,
		// Room for the largest payload with the largest topic.
		MaxRecordBytes: min(c.cfg.MaxPayload+65535+64, 256<<20),
		OnDrop:         c.onDrop,
		Logger:         c.cfg.Logger,
	}
	if c.cfg.OutboxDir == "" {
		c.q = outbox.NewMemory(opts)
		c.ownQ = true
		return nil
	}
	q, err := outbox.Open(c.cfg.OutboxDir, opts)
	if err != nil {
		return err
	}
	// The inbound QoS 2 ledger lives next to the outbox (inledger.go).
	in, err := openInLedger(c.cfg.OutboxDir, c.cfg.Durability != outbox.NoSync, c.log)
	if err != nil {
		_ = q.Close()
		return err
	}
	c.q, c.ownQ, c.d.in = q, true, in
	return nil
}

// closeOutbox closes the outbox if the client opened it, and the inbound
// QoS 2 ledger.
func (c *Client) closeOutbox() error {
	err := c.d.in.close()
	if c.ownQ && c.q != nil {
		err = errors.Join(c.q.Close(), err)
	}
	return err
}

// onDrop is the outbox's report of a record dropped or expired unsent.
func (c *Client) onDrop(seq uint64, reason error) {
	c.d.dropped(seq, fmt.Errorf("%w: %w", ErrDropped, reason), errors.Is(reason, outbox.ErrExpired))
}

func (c *Client) pahoOptions() *mqtt.ClientOptions {
	cfg := &c.cfg
	o := mqtt.NewClientOptions()
	if cfg.PahoOptions != nil {
		cfg.PahoOptions(o)
	}
	// Holdfast's own choices, restored after the escape hatch because the
	// guarantees depend on them.
	o.Servers = nil
	// The dial function picks the broker the supervisor chose, and the
	// credentials provider its credentials: paho gets a URL without user
	// information, which it would print in its logs.
	o.AddBroker(withoutUser(cfg.Brokers[0]))
	o.SetClientID(cfg.ClientID)
	o.SetProtocolVersion(4) // MQTT 3.1.1; no silent fallback to 3.1 that would mask a refusal's code
	o.SetCleanSession(!cfg.persistentSession())
	o.SetAutoReconnect(false) // exactly one supervisor decides when to connect
	o.SetConnectRetry(false)
	o.SetStore(c.d)
	o.SetKeepAlive(cfg.KeepAlive)
	// paho checks every KeepAlive/4 and pings after KeepAlive of silence: a
	// ping timeout of KeepAlive/4 (the default) notices a black hole after
	// about 1.5x.
	o.SetPingTimeout(cfg.PingTimeout)
	o.SetConnectTimeout(cfg.ConnectTimeout)
	o.SetWriteTimeout(cfg.WriteTimeout)
	// No MaxResumePubInFlight: the store paho resumes from holds only the
	// in-flight window (at most MaxInflight messages, MaxInflightQoS2 of
	// them QoS 2), so the resend burst is already within the broker's quota.
	// (paho's resume throttle also races with the next connection: its
	// helper goroutine reads c.stop unsynchronised, which -race reports.)
	o.SetMaxResumePubInFlight(0)
	o.SetResumeSubs(false) // subscriptions are restored by the client when the session is gone
	o.SetAutoAckDisabled(true)
	o.SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
		a := c.att.Load() // set by connect before paho dials
		if a == nil {
			return nil, errors.New("holdfast: no connection attempt prepared")
		}
		conn, err := dial(a, cfg)
		if err != nil {
			return nil, err
		}
		wc := &wireConn{Conn: conn, d: c.d, gen: c.d.dialed(), writeTimeout: cfg.WriteTimeout}
		c.conn.Store(wc)
		return wc, nil
	})
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		if s := c.sess.Load(); s != nil {
			s.lost(err)
		}
	})
	o.OnConnect = nil
	o.OnReconnecting = nil
	if cfg.Username != "" {
		o.SetUsername(cfg.Username) // for OptionsReader; the CONNECT takes the attempt's
		o.SetPassword(cfg.Password)
	}
	o.SetCredentialsProvider(func() (string, string) {
		if a := c.att.Load(); a != nil { // set by connect before paho builds the CONNECT
			return a.user, a.pass
		}
		return cfg.Username, cfg.Password
	})
	if cfg.Will != nil {
		o.SetBinaryWill(cfg.Will.Topic, cfg.Will.Payload, cfg.Will.QoS, cfg.Will.Retained)
	}
	return o
}

// session is one connection, as the supervisor sees it.
type session struct {
	broker  string
	done    chan struct{}
	once    sync.Once
	err     error
	present atomic.Bool // the CONNACK said the broker kept the session
}

func (s *session) Done() <-chan struct{} { return s.done }
func (s *session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}
func (s *session) lost(err error) {
	s.once.Do(func() {
		if err == nil {
			err = errors.New("connection lost")
		}
		s.err = err
		close(s.done)
	})
}

// connect is the supervisor's ConnectFunc: one attempt at broker.
func (c *Client) connect(ctx context.Context, broker string) (reconnect.Conn, error) {
	a, err := c.prepare(ctx, broker)
	if err != nil {
		return nil, err
	}
	s := &session{broker: broker, done: make(chan struct{})}
	c.att.Store(a)
	c.sess.Store(s)
	tok := c.paho.Connect()
	// paho bounds the attempt by ConnectTimeout; it is awaited even when
	// ctx ends so that no attempt outlives the call.
	<-tok.Done()
	if err := tok.Error(); err != nil {
		var rc byte
		if ct, _ := tok.(*mqtt.ConnectToken); ct != nil {
			rc = ct.ReturnCode()
		}
		// Typed and classified: bad credentials, not authorised, an
		// untrusted or expired certificate... are permanent (refusal.go).
		return nil, refusal(err, rc)
	}
	if ctx.Err() != nil {
		c.paho.Disconnect(0)
		return nil, ctx.Err()
	}
	ct, _ := tok.(*mqtt.ConnectToken)
	if ct != nil && ct.SessionPresent() {
		s.present.Store(true)
	} else {
		c.resubscribe(ctx, s)
	}
	return s, nil
}

func (c *Client) onEvent(ev reconnect.Event) {
	if ev.State == reconnect.Connected {
		if c.stats.connects.Add(1) > 1 {
			c.stats.reconnects.Add(1)
		}
	}
	c.log.Info("holdfast: connection", "state", ev.State.String(), "broker", redactURL(ev.Broker), "attempt", ev.Attempt, "delay", ev.Delay, "cause", ev.Err)
	if c.cfg.Hooks.OnConnection != nil {
		c.cfg.Hooks.OnConnection(ev)
	}
	c.receiverEvent(ev)
}

// AwaitConnected waits until a connection is up. Errors: ErrClosed,
// ErrStopped (wrapping the broker's permanent refusal), the context's error.
func (c *Client) AwaitConnected(ctx context.Context) error {
	if c.closing.Load() {
		return ErrClosed
	}
	_, err := c.sup.AwaitConnected(ctx)
	switch {
	case errors.Is(err, reconnect.ErrClosed):
		return ErrClosed
	case errors.Is(err, reconnect.ErrStopped):
		return fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return err
}

// IsConnected reports whether a connection is up right now.
func (c *Client) IsConnected() bool { return c.sup.State() == reconnect.Connected }

// Flush waits until every message accepted so far has been acknowledged by
// the broker (or dropped, as reported): the outbox is empty. It is the
// "safe to power off" signal. Errors: the context's error; ErrStopped
// (wrapping the broker's refusal) when the broker refused the client
// permanently, so nothing can drain until RetryNow or a restart.
func (c *Client) Flush(ctx context.Context) error {
	for {
		ch, appending := c.d.rc.watch() // taken before the check: a later change closes it
		supCh := c.sup.Changed()
		// Pending: a Publish may return (its commit done) a moment before
		// its record counts in Len; Pending counts it until then.
		if qs := c.q.Stats(); appending == 0 && qs.Len == 0 && qs.Pending == 0 {
			return nil
		}
		if err := c.stopped(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-supCh:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stopped returns an error wrapping ErrStopped and the refusal while the
// supervisor is stopped, else nil.
func (c *Client) stopped() error {
	if c.sup.State() != reconnect.Stopped {
		return nil
	}
	now, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.sup.AwaitConnected(now); errors.Is(err, reconnect.ErrStopped) {
		return fmt.Errorf("%w: %w", ErrStopped, err)
	}
	return nil
}

// RetryNow ends a stop caused by a permanent refusal (ErrStopped) and
// connects again at once, for instance after the credentials were fixed.
func (c *Client) RetryNow() { c.sup.RetryNow() }

// Close stops accepting messages (ErrClosed), waits until the outbox is
// drained or ctx ends, disconnects cleanly and closes the outbox. What is
// left in a durable outbox stays on disk for the next start; Close then
// returns an error wrapping ErrNotDrained. Close is idempotent; later calls
// return the first call's result.
func (c *Client) Close(ctx context.Context) error {
	c.closeOnce.Do(func() { c.closeErr = c.close(ctx) })
	return c.closeErr
}

func (c *Client) close(ctx context.Context) error {
	// 0. No new Publish; wait for those already past the check (a blocked
	// one ends with its context or, at step 7, with the outbox's ErrClosed).
	c.closing.Store(true)
	c.d.rc.shut(ctx)
	// 1. Drain while the dispatcher and the connection still run.
	flushErr := c.Flush(ctx)
	// 2. Stop the dispatcher: nothing new goes to paho.
	c.cancel()
	c.wg.Wait()
	// 3. Stop the supervisor; it waits for a connection attempt in progress.
	_ = c.sup.Close()
	// 4. Disconnect cleanly. paho's client is never reused after this.
	c.sendMu.Lock()
	if c.paho.IsConnectionOpen() {
		c.paho.Disconnect(250)
	}
	c.sendMu.Unlock()
	// 5. Receipts still waiting will not be answered by this client.
	c.d.rc.failAll(ErrClosed)
	left := c.q.Stats().Len
	// 6. The state persister, which paho's writes may have waited on.
	c.stopState()
	c.stateWG.Wait()
	// 7. Storage last.
	errs := []error{c.closeOutbox()}
	if flushErr != nil || left > 0 {
		errs = append(errs, fmt.Errorf("%w: %d messages remain (%v)", ErrNotDrained, left, flushErr))
	}
	return errors.Join(errs...)
}

// Stats is a snapshot of the client's state and counters.
type Stats struct {
	State       reconnect.State
	Broker      string        // the current or last broker (a password in its URL is shown as "xxxxx")
	Queued      int           // messages in the outbox, in flight included, and those still committing
	QueuedBytes int64         // their size
	OldestAge   time.Duration // age of the oldest queued message; 0 when empty
	Inflight    int           // sent, not yet acknowledged
	Pending     int           // PublishAsync messages handed over, not yet durable (at most Config.MaxPending)
	Accepted    uint64        // Publish calls that returned nil (QoS 1/2 and queued QoS 0)
	Sent        uint64        // messages handed to the network (first sends)
	Resent      uint64        // PUBLISH packets written again with DUP (resume)
	Suppressed  uint64        // stale PUBLISH copies paho tried to write again, dropped (see dispatcher.beforePublish)
	Acked       uint64        // PUBACK/PUBCOMP received
	Dropped     uint64        // dropped by the overflow policy
	Expired     uint64        // dropped by their TTL
	Reconnects  uint64        // connections after the first

	// Inbound (see Config.DefaultHandler, HandlerRetries, DeadLetter).
	Received     uint64 // messages handed to handlers (a redelivery joining one in progress is not counted again)
	Unrouted     uint64 // messages that matched no subscription, with no DefaultHandler: acknowledged unhandled
	Refusals     uint64 // times a handler returned an error
	DeadLettered uint64 // messages handed to DeadLetter after the last refusal, then acknowledged
}

// Stats returns a snapshot. It is cheap (no I/O) and safe for concurrent use.
func (c *Client) Stats() Stats {
	qs := c.q.Stats()
	c.d.mu.Lock()
	inflight := c.d.inflight
	c.d.mu.Unlock()
	broker, _ := c.sup.Current()
	st := Stats{
		State:       c.sup.State(),
		Broker:      redactURL(broker),
		Queued:      qs.Len + qs.Pending, // PublishAsync messages still committing count too
		QueuedBytes: qs.Bytes,
		Inflight:    inflight,
		Pending:     len(c.pending),
		Accepted:    c.stats.accepted.Load(),
		Sent:        c.stats.sent.Load(),
		Resent:      c.stats.resent.Load(),
		Suppressed:  c.stats.suppressed.Load(),
		Acked:       c.stats.acked.Load(),
		Dropped:     c.stats.dropped.Load(),
		Expired:     c.stats.expired.Load(),
		Reconnects:  c.stats.reconnects.Load(),
	}
	if qs.Len > 0 && !qs.Oldest.IsZero() {
		st.OldestAge = time.Since(qs.Oldest)
	}
	c.rx.addStats(&st)
	return st
}
