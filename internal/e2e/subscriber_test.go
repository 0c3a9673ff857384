package e2e

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Arrival is one message delivered to the subscriber's handler.
type Arrival struct {
	Seq uint64
	QoS byte
	Dup bool   // the PUBLISH had DUP set
	ID  uint16 // packet identifier on the subscriber's link
	At  time.Time
}

// Subscriber is the independent observer of the chaos test: a paho client
// connected straight to the broker (never through the fault proxy) with a
// persistent session, subscribed at QoS 2 to the lanes' topics. It records,
// per topic, every sequence number its handler receives, in arrival order.
//
// Its store (dedupStore) makes inbound QoS 2 exactly-once on this link, so
// that a QoS 2 duplicate it records was sent twice by the broker as two
// messages: a duplicate produced on the publisher's side.
type Subscriber struct {
	c     mqtt.Client
	store *dedupStore

	// mu guards the fields below.
	mu       sync.Mutex
	arrivals map[string][]Arrival
	last     time.Time // time of the last arrival
	skipped  int       // QoS 2 redeliveries the handler skipped
	bad      []string  // payloads without a sequence number
	lost     int       // connections lost (broker restarts)
}

// subscriberOptions are the paho options of the subscriber.
func subscriberOptions(url, clientID string, store mqtt.Store) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker(url).
		SetClientID(clientID).
		SetCleanSession(false).
		SetStore(store).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(500 * time.Millisecond).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(5 * time.Second).
		SetPingTimeout(5 * time.Second).
		SetOrderMatters(true) // one handler goroutine: arrival order is receive order
}

// NewSubscriber connects to url (the broker itself) as clientID and
// subscribes to topics at QoS 2. Close disconnects it.
func NewSubscriber(url, clientID string, topics []string) (*Subscriber, error) {
	s := &Subscriber{store: newDedupStore(), arrivals: map[string][]Arrival{}}
	opts := subscriberOptions(url, clientID, s.store)
	opts.SetConnectionLostHandler(func(mqtt.Client, error) {
		s.mu.Lock()
		s.lost++
		s.mu.Unlock()
	})
	s.c = mqtt.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.c.Disconnect(0)
		return nil, fmt.Errorf("subscriber: connect: %v", tok.Error())
	}
	filters := map[string]byte{}
	for _, t := range topics {
		filters[t] = 2
	}
	// The subscription lives in the persistent session: the broker keeps it
	// across reconnects and its own graceful restarts.
	tok := s.c.SubscribeMultiple(filters, s.handle)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.c.Disconnect(0)
		return nil, fmt.Errorf("subscriber: subscribe: %v", tok.Error())
	}
	return s, nil
}

// handle is the message handler: it skips a redelivered QoS 2 message that
// was already handled, and records the others.
func (s *Subscriber) handle(_ mqtt.Client, m mqtt.Message) {
	now := time.Now()
	if m.Qos() == 2 && !s.store.firstDelivery(m.MessageID(), m.Duplicate(), m.Payload()) {
		s.mu.Lock()
		s.skipped++
		s.mu.Unlock()
		return
	}
	seq, err := parseSeq(m.Payload())
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = now
	if err != nil {
		if len(s.bad) < 20 {
			s.bad = append(s.bad, fmt.Sprintf("%s: %v", m.Topic(), err))
		}
		return
	}
	s.arrivals[m.Topic()] = append(s.arrivals[m.Topic()], Arrival{Seq: seq, QoS: m.Qos(), Dup: m.Duplicate(), ID: m.MessageID(), At: now})
}

// parseSeq reads the decimal sequence number at the start of a payload.
func parseSeq(p []byte) (uint64, error) {
	i := bytes.IndexByte(p, ' ')
	if i <= 0 {
		return 0, fmt.Errorf("payload %.20q has no sequence number", p)
	}
	return strconv.ParseUint(string(p[:i]), 10, 64)
}

// Arrivals returns a copy of what arrived on topic, in arrival order.
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

// Last returns the time of the last arrival on any topic.
func (s *Subscriber) Last() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// SubscriberStats are the subscriber's own counters.
type SubscriberStats struct {
	SkippedRedeliveries int      `json:"skipped_qos2_redeliveries"` // QoS 2 PUBLISH seen again before PUBREL
	ConnectionsLost     int      `json:"connections_lost"`
	BadPayloads         []string `json:"bad_payloads,omitempty"`
}

// Stats returns the subscriber's counters.
func (s *Subscriber) Stats() SubscriberStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SubscriberStats{SkippedRedeliveries: s.skipped, ConnectionsLost: s.lost, BadPayloads: append([]string(nil), s.bad...)}
}

// Close disconnects the subscriber. Its persistent session stays on the
// broker.
func (s *Subscriber) Close() { s.c.Disconnect(250) }

// dedupStore wraps paho's MemoryStore to make inbound QoS 2 delivery to the
// handler exactly-once, which paho v1.5.1 does not do by itself: a PUBLISH
// redelivered with DUP before the PUBREL reaches the handler again, and
// resume() deletes stored inbound PUBLISH entries on reconnect, so the store
// cannot be asked what was handled.
//
// handled tracks, per packet identifier, the inbound QoS 2 exchange in
// progress: a PUBLISH without DUP starts a new exchange (not handled yet);
// the handler marks it handled; the PUBREL ends it (the broker never sends
// that PUBLISH again, and may reuse the identifier for a new message, whose
// first copy can carry DUP if an earlier attempt was cut before it arrived).
// Nothing else is deduplicated: two PUBLISH exchanges for one sequence
// number are two messages, and the test must see them.
type dedupStore struct {
	mqtt.Store

	mu        sync.Mutex
	handled   map[uint16]bool   // guarded by mu
	completed map[uint16]string // payload last handled under each id; guarded by mu
}

func newDedupStore() *dedupStore {
	return &dedupStore{Store: mqtt.NewMemoryStore(), handled: map[uint16]bool{}, completed: map[uint16]string{}}
}

// Put observes inbound QoS 2 PUBLISH and PUBREL packets, then stores.
func (s *dedupStore) Put(key string, cp packets.ControlPacket) {
	if strings.HasPrefix(key, "i.") {
		s.mu.Lock()
		switch p := cp.(type) {
		case *packets.PublishPacket:
			if p.Qos == 2 {
				if _, inProgress := s.handled[p.MessageID]; !p.Dup || !inProgress {
					s.handled[p.MessageID] = false
				}
			}
		case *packets.PubrelPacket:
			delete(s.handled, p.MessageID)
		}
		s.mu.Unlock()
	}
	s.Store.Put(key, cp)
}

// firstDelivery reports whether the QoS 2 message with packet identifier id
// has not been handled yet in its current exchange, and marks it handled.
//
// A DUP copy of the last message completed under id, with the same payload,
// is not a new message either: Mosquitto 2.0.11 restores an outgoing QoS 2
// message whose PUBREL it had already sent as a PUBLISH after a graceful
// restart, and sends it again with DUP (its log shows PUBLISH, PUBREC,
// PUBREL, the restart, then PUBLISH d1 with the same message id). A message
// the publisher sent twice reaches the broker as two messages and comes
// with two different identifiers, so it is still counted.
func (s *dedupStore) firstDelivery(id uint16, dup bool, payload []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handled[id] {
		return false
	}
	if dup && s.completed[id] == string(payload) {
		return false
	}
	s.handled[id] = true
	s.completed[id] = string(payload)
	return true
}
