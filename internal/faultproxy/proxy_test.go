package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestNewRejectsInvalidTarget(t *testing.T) {
	for _, target := range []string{"", "localhost", "127.0.0.1:"} {
		if p, err := New(target); !errors.Is(err, ErrInvalidTarget) {
			if p != nil {
				_ = p.Close()
			}
			t.Errorf("New(%q) = %v, want ErrInvalidTarget", target, err)
		}
	}
}

func TestForwardsAndCounts(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())
	if !strings.HasPrefix(p.URL(), "tcp://127.0.0.1:") || p.URL() != "tcp://"+p.Addr() {
		t.Fatalf("URL() = %q, Addr() = %q", p.URL(), p.Addr())
	}

	c := dial(t, p)
	roundTrip(t, c, "hello", "hello")
	roundTrip(t, c, "world!", "world!")

	eventually(t, 2*time.Second, func() bool {
		s := p.Stats()
		return s.Accepted == 1 && s.Active == 1 && s.BytesUp == 11 && s.BytesDown == 11
	}, "stats after two round trips")

	// An orderly close by the client is passed on as EOF and the link ends.
	_ = c.Close()
	if err := <-echo.ends; !errors.Is(err, io.EOF) {
		t.Fatalf("server saw %v, want EOF", err)
	}
	eventually(t, 2*time.Second, func() bool { return p.Stats().Active == 0 }, "Active back to 0")
	if s := p.Stats(); s.Cuts != 0 || s.Refused != 0 {
		t.Fatalf("unexpected faults counted: %+v", s)
	}
}

func TestHalfCloseIsForwarded(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())
	c := dial(t, p)
	if _, err := c.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c) // the echo arrives, then the server's EOF
	if err != nil || string(got) != "last words" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
}

func TestCutResetsBothSides(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())
	c := dial(t, p)
	roundTrip(t, c, "ping", "ping")

	p.Cut()

	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !isReset(err) {
		t.Fatalf("client read after Cut: %v, want connection reset", err)
	}
	select {
	case err := <-echo.ends:
		if !isReset(err) {
			t.Fatalf("server saw %v, want connection reset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server did not see the cut")
	}
	if got := p.Stats().Cuts; got != 1 {
		t.Fatalf("Cuts = %d, want 1", got)
	}
	eventually(t, 2*time.Second, func() bool { return p.Stats().Active == 0 }, "Active back to 0")

	// The proxy keeps forwarding new connections.
	roundTrip(t, dial(t, p), "again", "again")
}

func TestOutageRefusesThenRecovers(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())
	live := dial(t, p)
	roundTrip(t, live, "a", "a")

	p.Outage(300 * time.Millisecond)

	_ = live.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := live.Read(make([]byte, 1)); !isReset(err) {
		t.Fatalf("live connection during outage: %v, want reset", err)
	}
	// A connection made during the outage is reset at once.
	if err := dialRoundTrip(p, "b"); err == nil {
		t.Fatal("round trip succeeded during the outage")
	}
	if s := p.Stats(); s.Refused < 1 || s.Cuts != 1 {
		t.Fatalf("stats during outage: %+v", s)
	}
	// After the outage the proxy forwards again, without anyone calling it.
	eventually(t, 5*time.Second, func() bool { return dialRoundTrip(p, "c") == nil }, "forwarding after the outage")
}

func TestSetRefuseLatestCallWins(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())

	p.SetRefuse(true)
	if err := dialRoundTrip(p, "x"); err == nil {
		t.Fatal("round trip succeeded while refusing")
	}
	p.SetRefuse(false)
	roundTrip(t, dial(t, p), "y", "y")

	// A later SetRefuse(true) is not ended by an earlier Outage's timer.
	p.Outage(50 * time.Millisecond)
	p.SetRefuse(true)
	// Wait past the outage's end: the connection must still be refused.
	time.Sleep(150 * time.Millisecond) // not synchronisation: proving a timer did NOT act
	if err := dialRoundTrip(p, "z"); err == nil {
		t.Fatal("an older Outage timer ended a later SetRefuse(true)")
	}
	p.SetRefuse(false)
	roundTrip(t, dial(t, p), "w", "w")
}

func TestBlackholeHoldsBytesUntilLifted(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())
	c := dial(t, p)
	roundTrip(t, c, "before", "before")
	// The counters are updated just after each write: wait for them to settle.
	eventually(t, 2*time.Second, func() bool {
		s := p.Stats()
		return s.BytesUp == 6 && s.BytesDown == 6
	}, "counters settle")
	up, down := uint64(6), uint64(6)

	p.SetBlackhole(true)
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(make([]byte, 16)); !isTimeout(err) {
		t.Fatalf("read during black hole = %d, %v; want a timeout", n, err)
	}
	if s := p.Stats(); s.BytesUp != up || s.BytesDown != down {
		t.Fatalf("bytes forwarded during black hole: %+v", s)
	}

	p.SetBlackhole(false)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("after black hole: %q, %v", got, err)
	}
}

func TestBlackholeHoldsEndOfStream(t *testing.T) {
	// A target that closes each connection as soon as told to.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closeNow := make(chan struct{})
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		<-closeNow
		_ = c.Close()
	}()
	t.Cleanup(func() { _ = ln.Close(); <-served })

	p := newProxy(t, ln.Addr().String())
	c := dial(t, p)
	eventually(t, 2*time.Second, func() bool { return p.Stats().Active == 1 }, "link up")

	p.SetBlackhole(true)
	close(closeNow)
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("read during black hole: %v; want a timeout (the EOF must be held)", err)
	}
	p.SetBlackhole(false)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after black hole: %v; want EOF", err)
	}
}

func TestLatencyDelaysEachDirection(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())
	c := dial(t, p)
	roundTrip(t, c, "warm", "warm")

	const latency = 100 * time.Millisecond
	p.SetLatency(latency)
	start := time.Now()
	roundTrip(t, c, "slow", "slow")
	if rtt := time.Since(start); rtt < 2*latency {
		t.Fatalf("round trip took %v, want at least %v", rtt, 2*latency)
	}

	p.SetLatency(0)
	roundTrip(t, c, "fast", "fast") // and it still works with the delay removed
}

func TestBandwidthThrottles(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())
	c := dial(t, p)

	const bps = 100_000
	p.SetBandwidth(bps)
	msg := bytes.Repeat([]byte("0123456789"), 5_000) // 50 kB: ~0.5 s at 100 kB/s
	start := time.Now()
	roundTrip(t, c, string(msg), string(msg))
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("50 kB at %d B/s took only %v", bps, d)
	}

	p.SetBandwidth(0)
	start = time.Now()
	roundTrip(t, c, string(msg), string(msg))
	t.Logf("unthrottled round trip of 50 kB: %v", time.Since(start))
}

func TestDialErrorResetsClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close() // nothing listens there any more

	p := newProxy(t, dead)
	if err := dialRoundTrip(p, "x"); err == nil {
		t.Fatal("round trip to a dead target succeeded")
	}
	eventually(t, 2*time.Second, func() bool { return p.Stats().DialErrors == 1 }, "DialErrors == 1")
}

func TestSetTargetAppliesToNewConnections(t *testing.T) {
	a := startEcho(t, "a:")
	b := startEcho(t, "b:")
	p := newProxy(t, a.addr())
	old := dial(t, p)
	roundTrip(t, old, "1", "a:1")

	p.SetTarget(b.addr())
	roundTrip(t, dial(t, p), "2", "b:2")
	roundTrip(t, old, "3", "a:3") // live connections keep their target
}

func TestCloseStopsEverything(t *testing.T) {
	echo := startEcho(t, "")
	p, err := New(echo.addr())
	if err != nil {
		t.Fatal(err)
	}
	// An outage timer that is still pending when Close is called.
	p.Outage(time.Hour)
	p.SetRefuse(false)
	var conns []net.Conn
	for range 3 {
		c := dial(t, p)
		roundTrip(t, c, "x", "x")
		conns = append(conns, c)
	}
	// Leave goroutines parked in every kind of wait.
	p.SetLatency(time.Hour)
	if _, err := conns[0].Write([]byte("delayed")); err != nil {
		t.Fatal(err)
	}
	p.SetLatency(0)
	p.SetBlackhole(true)
	if _, err := conns[1].Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	p.Chaos(t.Context(), Schedule{Seed: 1, MinInterval: time.Hour})

	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := p.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		_ = c.Close()
		t.Fatal("proxy still accepts after Close")
	}
	p.Chaos(t.Context(), Schedule{Seed: 1}) // no-op once closed
	// leakcheck.Run (TestMain) checks that no goroutine is left behind.
}
