// Package testsub is an independent MQTT subscriber for tests: a bare paho
// client with a persistent session that records every message it receives,
// per topic, in arrival order.
//
// paho v1.5.1 hands an inbound QoS 2 duplicate PUBLISH (one that arrives
// again before the PUBREL) to the handler twice, and its resume() deletes
// stored inbound PUBLISH entries. Subscriber therefore keeps its own
// record: a PUBLISH without the DUP flag, or a PUBREL, ends what is known
// of a packet identifier, and a QoS 2 message whose identifier was already
// handled is acknowledged without being recorded again. Nothing else is
// deduplicated, so duplicates produced by a publisher stay visible.
package testsub

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Subscriber records messages.
type Subscriber struct {
	c mqtt.Client

	mu        sync.Mutex // guards the fields below
	handled   map[uint16]bool
	completed map[uint16]string // payload last handled under each QoS 2 identifier
	arrivals  map[string][]Arrival
	changed   chan struct{}
}

// Arrival is one received message.
type Arrival struct {
	Seq     uint64 // the decimal number the payload begins with (0 if none)
	Payload []byte
	QoS     byte
	Dup     bool
	At      time.Time
}

// Options configure a Subscriber.
type Options struct {
	Broker   string // URL
	ClientID string // stable: the session is persistent
	Topics   []string
	QoS      byte // subscription QoS, default 2
	Username string
	Password string
}

// Start connects, subscribes and starts recording. It reconnects on its own
// (paho's AutoReconnect), keeping the session.
func Start(o Options) (*Subscriber, error) {
	if o.QoS == 0 {
		o.QoS = 2
	}
	s := &Subscriber{handled: map[uint16]bool{}, completed: map[uint16]string{}, arrivals: map[string][]Arrival{}, changed: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker(o.Broker).
		SetClientID(o.ClientID).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(500 * time.Millisecond).
		SetKeepAlive(5 * time.Second).
		SetOrderMatters(true).
		SetResumeSubs(true).
		SetStore(&dedupStore{Store: mqtt.NewMemoryStore(), s: s})
	if o.Username != "" {
		opts.SetUsername(o.Username).SetPassword(o.Password)
	}
	filters := map[string]byte{}
	for _, t := range o.Topics {
		filters[t] = o.QoS
	}
	opts.SetOnConnectHandler(func(c mqtt.Client) {
		// Re-subscribing is harmless with a kept session and needed without.
		c.SubscribeMultiple(filters, s.handle)
	})
	s.c = mqtt.NewClient(opts)
	tok := s.c.Connect()
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		s.c.Disconnect(0)
		return nil, fmt.Errorf("testsub: connect: %v", tok.Error())
	}
	st := s.c.SubscribeMultiple(filters, s.handle)
	if !st.WaitTimeout(15*time.Second) || st.Error() != nil {
		s.c.Disconnect(0)
		return nil, fmt.Errorf("testsub: subscribe: %v", st.Error())
	}
	return s, nil
}

func (s *Subscriber) handle(_ mqtt.Client, m mqtt.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.Qos() == 2 {
		if s.handled[m.MessageID()] {
			return // the same QoS 2 exchange, seen again before PUBREL
		}
		if m.Duplicate() && s.completed[m.MessageID()] == string(m.Payload()) {
			// Mosquitto 2.0.11 resends a QoS 2 message whose PUBREL it had
			// sent as a PUBLISH after a graceful restart. A message sent
			// twice by a publisher comes under another identifier.
			return
		}
		s.handled[m.MessageID()] = true
		s.completed[m.MessageID()] = string(m.Payload())
	}
	p := append([]byte(nil), m.Payload()...)
	s.arrivals[m.Topic()] = append(s.arrivals[m.Topic()], Arrival{Seq: SeqOf(p), Payload: p, QoS: m.Qos(), Dup: m.Duplicate(), At: time.Now()})
	close(s.changed)
	s.changed = make(chan struct{})
}

// SeqOf returns the decimal number a payload begins with, 0 if none.
func SeqOf(p []byte) uint64 {
	end := strings.IndexByte(string(p), ' ')
	if end < 0 {
		end = len(p)
	}
	n, err := strconv.ParseUint(string(p[:end]), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// Arrivals returns a copy of what arrived on topic.
func (s *Subscriber) Arrivals(topic string) []Arrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Arrival(nil), s.arrivals[topic]...)
}

// Count returns how many messages arrived on topic.
func (s *Subscriber) Count(topic string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.arrivals[topic])
}

// Changed returns a channel closed at the next arrival.
func (s *Subscriber) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// WaitCount waits until at least n messages arrived on topic, or timeout.
// For many messages prefer WaitProgress, which does not depend on the
// machine's speed.
func (s *Subscriber) WaitCount(topic string, n int, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := s.Changed()
		if s.Count(topic) >= n {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return s.Count(topic) >= n
		}
	}
}

// WaitProgress waits until at least n messages arrived on topic for as long
// as they keep arriving: it gives up only once nothing new has arrived on
// topic for stall, and reports whether n arrived. It has no bound on the
// total time, so a slow machine is not taken for a lost message; the test
// binary's -timeout is the safety net.
func (s *Subscriber) WaitProgress(topic string, n int, stall time.Duration) bool {
	last := s.Count(topic)
	timer := time.NewTimer(stall)
	defer timer.Stop()
	for {
		ch := s.Changed()
		got := s.Count(topic)
		if got >= n {
			return true
		}
		if got != last {
			last = got
			timer.Reset(stall)
		}
		select {
		case <-ch:
		case <-timer.C:
			return s.Count(topic) >= n
		}
	}
}

// Connected reports whether the subscriber's connection is up.
func (s *Subscriber) Connected() bool { return s.c.IsConnectionOpen() }

// Close disconnects.
func (s *Subscriber) Close() { s.c.Disconnect(250) }

// dedupStore marks a packet identifier as a new message when a PUBLISH
// without DUP arrives under it.
type dedupStore struct {
	mqtt.Store
	s *Subscriber
}

func (d *dedupStore) Put(key string, m packets.ControlPacket) {
	if strings.HasPrefix(key, "i.") {
		switch p := m.(type) {
		case *packets.PublishPacket:
			if !p.Dup {
				d.s.forget(p.MessageID)
			}
		case *packets.PubrelPacket:
			// The exchange is over: the broker never resends this PUBLISH,
			// and the next one under the identifier (even with DUP, if its
			// first copy was lost) is a new message.
			d.s.forget(p.MessageID)
		}
	}
	d.Store.Put(key, m)
}

func (s *Subscriber) forget(id uint16) {
	s.mu.Lock()
	delete(s.handled, id)
	s.mu.Unlock()
}

// Report summarises one topic's arrivals against the accepted sequence
// numbers, in acceptance order.
type Report struct {
	Accepted   int
	Received   int
	Lost       []uint64 // accepted, never received
	Reordered  []uint64 // first arrivals that came after a later one's first arrival
	Duplicates map[uint64]int
	Unexpected []uint64 // received, never accepted
}

// Check compares arrivals with the accepted sequence numbers (ascending).
func Check(accepted []uint64, arrivals []Arrival) Report {
	r := Report{Accepted: len(accepted), Received: len(arrivals), Duplicates: map[uint64]int{}}
	acc := make(map[uint64]bool, len(accepted))
	for _, n := range accepted {
		acc[n] = true
	}
	seen := make(map[uint64]int, len(arrivals))
	var maxFirst uint64
	for _, a := range arrivals {
		seen[a.Seq]++
		if seen[a.Seq] > 1 {
			r.Duplicates[a.Seq] = seen[a.Seq] - 1
			continue
		}
		if !acc[a.Seq] {
			r.Unexpected = append(r.Unexpected, a.Seq)
			continue
		}
		if a.Seq < maxFirst {
			r.Reordered = append(r.Reordered, a.Seq)
		}
		maxFirst = max(maxFirst, a.Seq)
	}
	for _, n := range accepted {
		if seen[n] == 0 {
			r.Lost = append(r.Lost, n)
		}
	}
	return r
}
