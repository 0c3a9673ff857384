// Package faultproxy is a TCP proxy for tests that injects network faults
// between an MQTT client and a broker: connection resets, outages, black holes,
// added latency and bandwidth limits, by hand or on a seeded random schedule.
//
// A Proxy listens on a loopback port and forwards every accepted connection to
// its target. Point the client at Proxy.URL instead of the broker's address,
// then call Cut, Outage, SetBlackhole, SetLatency, SetBandwidth or Chaos while
// the test runs:
//
//	p, err := faultproxy.New(broker.Addr())
//	if err != nil { ... }
//	defer p.Close()
//	opts.AddBroker(p.URL())
//	...
//	p.Cut() // both the client and the broker see a reset connection
//
// # Guarantees
//
//   - Cut resets connections with SO_LINGER 0: the client and the broker each
//     receive a TCP RST, as after a crashed middlebox, not an orderly close.
//   - While black-holed, nothing is forwarded in either direction and no end of
//     stream is passed on: bytes and a peer's FIN are held back (not dropped)
//     and delivered once the black hole ends. Only a keepalive timeout notices.
//   - Every goroutine the Proxy starts (accept loop, two per connection, outage
//     timers, Chaos) is tracked and has ended when Close returns.
//   - Chaos chooses the same sequence of faults (kind, wait, duration) for the
//     same Schedule; Schedule.Faults lists that sequence in advance.
//   - Stats counters are updated atomically and can be read at any time.
//
// # Caveats
//
//   - Latency is added per chunk read from a socket: under a continuous stream
//     the delays of successive chunks add up, so latency also lowers throughput.
//   - The bandwidth limit is applied per connection and per direction, after the
//     latency, in slices of at most a twentieth of a second's worth of bytes.
//   - During an outage (SetRefuse, Outage) connections are accepted by the
//     kernel and then reset at once, so a client sees "connection reset" rather
//     than "connection refused".
//   - Timing depends on the scheduler; tests should assert loose bounds only.
//   - The package is for tests on loopback; it is not hardened against hostile
//     peers.
package faultproxy
