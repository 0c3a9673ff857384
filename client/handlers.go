package client

import (
	"context"
	"fmt"
	"net/url"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// receiverEvent is told every connection state change (Client.onEvent): a
// new connection wakes the subscription syncer, and the adapter answers its
// Connect calls and runs paho's connection handlers.
func (c *Client) receiverEvent(ev reconnect.Event) {
	if ev.State == reconnect.Connected {
		c.rx.wake()
	}
	c.rx.compat.event(ev)
}

// event maps a state change to what paho would do at that point:
//
//	Connecting            reconnecting handler (after a loss), notifications Connecting and Broker
//	Connected             OnConnect, notification Connected
//	Disconnected (loss)   connection-lost handler, notification Lost
//	Disconnected, Stopped (a failed attempt): notifications BrokerFailed and Failed
//
// Connect calls waiting for an outcome complete on Connected, on a failed
// attempt (with its error) and on Closed.
func (p *compat) event(ev reconnect.Event) {
	var outcome error
	decided := true
	switch {
	case ev.State == reconnect.Connected:
	case ev.State == reconnect.Closed:
		outcome = ErrClosed
	case ev.State == reconnect.Stopped:
		outcome = fmt.Errorf("%w: %w", ErrStopped, ev.Err)
	case ev.State == reconnect.Disconnected && ev.Prev == reconnect.Connecting:
		outcome = ev.Err
	default:
		decided = false
	}
	p.mu.Lock()
	var waiters []*connectToken
	if decided {
		waiters, p.waiters = p.waiters, nil
	}
	reconnecting := p.connected
	if ev.State == reconnect.Connected {
		p.connected = true
	}
	if s := p.p; s != nil {
		p.calls = append(p.calls, s.callbacks(p, ev, reconnecting)...)
	}
	p.mu.Unlock()
	present := ev.State == reconnect.Connected && p.c.sessionPresent()
	for _, t := range waiters {
		t.finishConnect(outcome, present)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// callbacks returns the calls paho would make for ev, in order.
func (s *pahoSettings) callbacks(p *compat, ev reconnect.Event, reconnecting bool) []func() {
	var calls []func()
	notify := func(n mqtt.ConnectionNotification) {
		if s.onNotify != nil {
			calls = append(calls, func() { s.onNotify(p, n) })
		}
	}
	broker, _ := url.Parse(ev.Broker)
	switch ev.State {
	case reconnect.Connecting:
		if reconnecting && s.onReconnecting != nil {
			opts := s.opts
			calls = append(calls, func() { s.onReconnecting(p, &opts) })
		}
		notify(mqtt.ConnectionNotificationConnecting{IsReconnect: reconnecting, Attempt: max(ev.Attempt-1, 0)})
		notify(mqtt.ConnectionNotificationBroker{Broker: broker})
	case reconnect.Connected:
		if s.onConnect != nil {
			calls = append(calls, func() { s.onConnect(p) })
		}
		notify(mqtt.ConnectionNotificationConnected{})
	case reconnect.Disconnected, reconnect.Stopped:
		if ev.Prev == reconnect.Connected {
			if s.onLost != nil {
				calls = append(calls, func() { s.onLost(p, ev.Err) })
			}
			notify(mqtt.ConnectionNotificationLost{Reason: ev.Err})
		} else if ev.Prev == reconnect.Connecting {
			notify(mqtt.ConnectionNotificationBrokerFailed{Broker: broker, Reason: ev.Err})
			notify(mqtt.ConnectionNotificationFailed{Reason: ev.Err})
		}
	}
	return calls
}

// runCallbacks is the goroutine that runs paho's connection handlers, one at
// a time in the order of the events, so that the supervisor never waits for
// them. It stops with ctx, after the handler running then returns (Close
// waits for it).
func (p *compat) runCallbacks(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		for {
			p.mu.Lock()
			if len(p.calls) == 0 || ctx.Err() != nil {
				p.mu.Unlock()
				break
			}
			call := p.calls[0]
			p.calls = p.calls[1:]
			p.mu.Unlock()
			call()
		}
	}
}

// sessionPresent reports whether the broker kept the session at the current
// connection (its CONNACK).
func (c *Client) sessionPresent() bool {
	s := c.sess.Load()
	return s != nil && s.present.Load()
}
