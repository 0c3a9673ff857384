package reconnect_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

func okConnect(context.Context, string) (reconnect.Conn, error) { return nil, errors.New("unused") }

func TestNewValidates(t *testing.T) {
	good := reconnect.Config{Brokers: []string{"tcp://a:1883"}, Connect: okConnect}
	cases := map[string]func(c *reconnect.Config){
		"no brokers":       func(c *reconnect.Config) { c.Brokers = nil },
		"empty broker":     func(c *reconnect.Config) { c.Brokers = []string{"tcp://a", ""} },
		"no connect":       func(c *reconnect.Config) { c.Connect = nil },
		"negative timeout": func(c *reconnect.Config) { c.AttemptTimeout = -1 },
		"negative initial": func(c *reconnect.Config) { c.Policy.InitialInterval = -1 },
		"negative max":     func(c *reconnect.Config) { c.Policy.MaxInterval = -1 },
		"max below initial": func(c *reconnect.Config) {
			c.Policy.InitialInterval, c.Policy.MaxInterval = time.Second, time.Millisecond
		},
		"multiplier below 1": func(c *reconnect.Config) { c.Policy.Multiplier = 0.5 },
		"multiplier NaN":     func(c *reconnect.Config) { c.Policy.Multiplier = math.NaN() },
		"multiplier Inf":     func(c *reconnect.Config) { c.Policy.Multiplier = math.Inf(1) },
		"jitter 1":           func(c *reconnect.Config) { c.Policy.Jitter = 1 },
		"jitter NaN":         func(c *reconnect.Config) { c.Policy.Jitter = math.NaN() },
		"negative stable":    func(c *reconnect.Config) { c.Policy.StableAfter = -1 },
		"negative permanent": func(c *reconnect.Config) { c.Policy.PermanentInterval = -1 },
		"unknown action":     func(c *reconnect.Config) { c.Policy.OnPermanent = 7 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			c := good
			c.Brokers = append([]string(nil), good.Brokers...)
			mutate(&c)
			s, err := reconnect.New(c)
			if !errors.Is(err, reconnect.ErrInvalidConfig) || s != nil {
				t.Fatalf("New: %v, %v", s, err)
			}
		})
	}
	s, err := reconnect.New(good)
	if err != nil {
		t.Fatal(err)
	}
	if s.State() != reconnect.Disconnected {
		t.Fatalf("initial state %v", s.State())
	}
	_ = s.Close()
	// A large InitialInterval raises the default MaxInterval instead of failing.
	c := good
	c.Policy.InitialInterval = time.Minute
	if _, err := reconnect.New(c); err != nil {
		t.Fatal(err)
	}
}

func TestNewCopiesBrokers(t *testing.T) {
	brokers := []string{"tcp://a"}
	s, err := reconnect.New(reconnect.Config{Brokers: brokers, Connect: okConnect})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	brokers[0] = "tcp://changed"
	if b, _ := s.Current(); b != "" {
		t.Fatalf("Current before Start: %q", b)
	}
}

func TestPolicyNewBackOffDefaults(t *testing.T) {
	b := reconnect.Policy{}.NewBackOff()
	if b.InitialInterval != 250*time.Millisecond || b.MaxInterval != 30*time.Second || b.Multiplier != 2 ||
		b.RandomizationFactor != 0.5 || b.MaxElapsedTime != 0 {
		t.Fatalf("defaults: %+v", b)
	}
	b = reconnect.Policy{Jitter: reconnect.NoJitter, InitialInterval: time.Second, MaxInterval: 4 * time.Second}.NewBackOff()
	var got []time.Duration
	for range 5 {
		got = append(got, b.NextBackOff())
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sequence %v, want %v", got, want)
		}
	}
	b.Reset()
	if d := b.NextBackOff(); d != time.Second || d == backoff.Stop {
		t.Fatalf("after Reset: %v", d)
	}
}

func TestIsPermanent(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{io.EOF, false},
		{context.DeadlineExceeded, false},
		{reconnect.Permanent(io.EOF), true},
		{fmt.Errorf("wrapped: %w", reconnect.Permanent(io.EOF)), true},
		{backoff.Permanent(io.EOF), true},
		{&reconnect.RefusedError{Code: reconnect.ConnackBadProtocolVersion}, true},
		{&reconnect.RefusedError{Code: reconnect.ConnackIdentifierRejected}, true},
		{&reconnect.RefusedError{Code: reconnect.ConnackServerUnavailable}, false},
		{&reconnect.RefusedError{Code: reconnect.ConnackBadUsernameOrPassword}, true},
		{&reconnect.RefusedError{Code: reconnect.ConnackNotAuthorized}, true},
		{&reconnect.RefusedError{Code: 0x80}, false},
		{fmt.Errorf("connect: %w", &reconnect.RefusedError{Code: reconnect.ConnackNotAuthorized}), true},
		{reconnect.Permanent(&reconnect.RefusedError{Code: reconnect.ConnackServerUnavailable}), true},
	}
	for _, c := range cases {
		if got := reconnect.IsPermanent(c.err); got != c.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if reconnect.Permanent(nil) != nil {
		t.Fatal("Permanent(nil) != nil")
	}
	if !errors.Is(reconnect.Permanent(io.EOF), io.EOF) {
		t.Fatal("Permanent does not unwrap")
	}
}

func TestRefusedError(t *testing.T) {
	lib := errors.New("bad user name or password")
	var err error = &reconnect.RefusedError{Code: reconnect.ConnackBadUsernameOrPassword, Err: lib}
	if !errors.Is(err, reconnect.ErrRefused) || !errors.Is(err, lib) || errors.Is(err, io.EOF) {
		t.Fatal("errors.Is")
	}
	if !strings.Contains(err.Error(), "bad user name or password") {
		t.Fatalf("message %q", err)
	}
	names := map[reconnect.ConnackCode]string{
		0: "accepted", 1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable",
		4: "bad user name or password", 5: "not authorised", 9: "connack code 9",
	}
	for c, n := range names {
		if c.String() != n {
			t.Errorf("%d: %q", c, c.String())
		}
	}
}

func TestStrings(t *testing.T) {
	for s, n := range map[reconnect.State]string{
		reconnect.Disconnected: "Disconnected", reconnect.Connecting: "Connecting", reconnect.Connected: "Connected",
		reconnect.Closed: "Closed", reconnect.Stopped: "Stopped", 42: "State(42)",
	} {
		if s.String() != n {
			t.Errorf("%d: %q", int(s), s.String())
		}
	}
	for a, n := range map[reconnect.PermanentAction]string{
		reconnect.StopOnPermanent: "StopOnPermanent", reconnect.SlowOnPermanent: "SlowOnPermanent", 3: "PermanentAction(3)",
	} {
		if a.String() != n {
			t.Errorf("%d: %q", int(a), a.String())
		}
	}
	ev := reconnect.Event{State: reconnect.Disconnected, Prev: reconnect.Connected, Broker: "tcp://user:secret@host:1883",
		Delay: time.Second, Uptime: time.Minute, Err: io.EOF}
	s := ev.String()
	if strings.Contains(s, "secret") || !strings.Contains(s, "Connected->Disconnected") || !strings.Contains(s, "EOF") {
		t.Fatalf("Event.String %q", s)
	}
	ev.Broker = "user:secret@host:1883" // not a URL: still not printed
	if s := ev.String(); strings.Contains(s, "secret") {
		t.Fatalf("Event.String %q", s)
	}
}
