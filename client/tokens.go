package client

import (
	"errors"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// The paho adapter's tokens. paho's concrete token types
// (*mqtt.ConnectToken, *mqtt.SubscribeToken, *mqtt.PublishToken) cannot be
// made outside paho: their fields and their completion are unexported, and
// a zero value never completes. What a program reads from them is offered
// through methods of the same names, so asserting a token to an interface
// works with paho's tokens and with the adapter's alike:
//
//	if ct, ok := tok.(interface{ SessionPresent() bool }); ok { ... } // Connect
//	if st, ok := tok.(interface{ Result() map[string]byte }); ok { ... } // Subscribe
//
// A publish has no packet identifier when Publish returns (it is assigned
// when the outbox hands the message to the network, and a resend after a
// restart may get another); its token offers the message's Receipt instead
// (interface{ Receipt() *Receipt }), whose Seq identifies it for good.

// token is an mqtt.Token completed once.
type token struct {
	done chan struct{}
	once sync.Once
	err  error
}

func newToken() *token { return &token{done: make(chan struct{})} }

func (t *token) finish(err error) {
	t.once.Do(func() { t.err = err; close(t.done) })
}

func (t *token) Wait() bool { <-t.done; return true }
func (t *token) WaitTimeout(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.done:
		return true
	case <-timer.C:
		return false
	}
}
func (t *token) Done() <-chan struct{} { return t.done }
func (t *token) Error() error {
	select {
	case <-t.done:
		return t.err
	default:
		return nil
	}
}

// receiptToken is a Receipt seen as a paho token.
type receiptToken struct{ r *Receipt }

func (t receiptToken) Wait() bool { <-t.r.Done(); return true }
func (t receiptToken) WaitTimeout(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.r.Done():
		return true
	case <-timer.C:
		return false
	}
}
func (t receiptToken) Done() <-chan struct{} { return t.r.Done() }
func (t receiptToken) Error() error {
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	return t.r.err
}

// Receipt is the message's Receipt (see Client.PublishAsync).
func (t receiptToken) Receipt() *Receipt { return t.r }

// connectToken is the adapter's Connect token: SessionPresent and
// ReturnCode as paho's *mqtt.ConnectToken has them.
type connectToken struct {
	*token
	mu             sync.Mutex // guards the fields below
	sessionPresent bool
	returnCode     byte
}

// SessionPresent reports whether the broker kept the session (CONNACK).
func (t *connectToken) SessionPresent() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sessionPresent
}

// ReturnCode is the CONNACK return code: 0 once connected, the broker's
// refusal code after a refusal, 0 for other failures (paho too reports
// network errors with a token error only).
func (t *connectToken) ReturnCode() byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.returnCode
}

// finishConnect completes t with a connection outcome.
func (t *connectToken) finishConnect(err error, sessionPresent bool) {
	t.mu.Lock()
	t.sessionPresent = sessionPresent
	var refused *reconnect.RefusedError
	if errors.As(err, &refused) {
		t.returnCode = byte(refused.Code)
	}
	t.mu.Unlock()
	t.finish(err)
}

// subscribeToken is the adapter's Subscribe token: Result as paho's
// *mqtt.SubscribeToken has it.
type subscribeToken struct {
	*token
	mu     sync.Mutex      // guards result
	result map[string]byte // granted QoS by filter; 0x80: refused
}

func (t *subscribeToken) set(filter string, granted byte) {
	t.mu.Lock()
	t.result[filter] = granted
	t.mu.Unlock()
}

// Result returns the QoS the broker granted each filter (0x80 for a
// refusal), once the token completed.
func (t *subscribeToken) Result() map[string]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]byte, len(t.result))
	for f, q := range t.result {
		out[f] = q
	}
	return out
}

var (
	_ interface {
		mqtt.Token
		SessionPresent() bool
		ReturnCode() byte
	} = (*connectToken)(nil)
	_ interface {
		mqtt.Token
		Result() map[string]byte
	} = (*subscribeToken)(nil)
	_ interface {
		mqtt.Token
		Receipt() *Receipt
	} = receiptToken{}
)
