//go:build go1.25

package reconnect_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

var errDial = errors.New("dial tcp: connection refused")

// alwaysFail is a script whose every attempt fails with errDial.
func alwaysFail(context.Context, int, string) (reconnect.Conn, error) { return nil, errDial }

// startSup builds and starts a supervisor on one broker; Close is registered
// as cleanup.
func startSup(t *testing.T, d *fakeDialer, r *recorder, p reconnect.Policy, brokers ...string) *reconnect.Supervisor {
	t.Helper()
	if len(brokers) == 0 {
		brokers = []string{"tcp://a:1883"}
	}
	s, err := reconnect.New(reconnect.Config{Brokers: brokers, Connect: d.connect, Policy: p, OnEvent: r.on})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.Start()
	return s
}

// mustAwait waits (in fake time, so a broken supervisor fails instead of
// spinning forever) for the supervisor to connect.
func mustAwait(t *testing.T, s *reconnect.Supervisor) reconnect.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 24*time.Hour)
	defer cancel()
	c, err := s.AwaitConnected(ctx)
	if err != nil {
		t.Fatalf("AwaitConnected: %v (state %v)", err, s.State())
	}
	return c
}

func TestPolicyDelaySequenceWithoutJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{script: alwaysFail}
		r := &recorder{}
		start := time.Now()
		s := startSup(t, d, r, reconnect.Policy{
			InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second,
			Multiplier: 2, Jitter: reconnect.NoJitter,
		})
		time.Sleep(5 * time.Second)
		synctest.Wait()
		_ = s.Close()

		as := d.snapshot()
		if len(as) == 0 || !as[0].at.Equal(start) {
			t.Fatalf("first attempt must be made at Start; attempts %v", as)
		}
		want := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
		for i := range want {
			want[i] *= time.Millisecond
		}
		got := gaps(as)
		if len(got) != len(want) {
			t.Fatalf("gaps between attempts: got %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("gap %d: got %v, want %v (all %v)", i, got[i], want[i], got)
			}
		}
		// The Disconnected events announce exactly the delay that follows.
		dis := r.of(reconnect.Disconnected)
		for i := range want {
			if dis[i].Delay != want[i] || !errors.Is(dis[i].Err, errDial) {
				t.Fatalf("Disconnected event %d: delay %v err %v; want %v, %v", i, dis[i].Delay, dis[i].Err, want[i], errDial)
			}
		}
	})
}

func TestPolicyJitterBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{script: alwaysFail}
		r := &recorder{}
		const initial, maxI = 100 * time.Millisecond, 1600 * time.Millisecond
		s := startSup(t, d, r, reconnect.Policy{InitialInterval: initial, MaxInterval: maxI, Multiplier: 2, Jitter: 0.5})
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		_ = s.Close()

		got := gaps(d.snapshot())
		if len(got) < 50 {
			t.Fatalf("only %d retries in 2 minutes", len(got))
		}
		base := initial
		distinct := map[time.Duration]bool{}
		for i, g := range got {
			lo, hi := base/2, base*3/2+1
			if g < lo || g > hi {
				t.Fatalf("delay %d = %v outside [%v, %v] (base %v)", i, g, lo, hi, base)
			}
			distinct[g] = true
			base = min(base*2, maxI)
		}
		// Randomised: far from one value per base step.
		if len(distinct) < len(got)/2 {
			t.Fatalf("delays look unrandomised: %d distinct of %d: %v", len(distinct), len(got), got)
		}
		// Each announced delay is the one actually waited.
		dis := r.of(reconnect.Disconnected)
		for i, g := range got {
			if dis[i].Delay != g {
				t.Fatalf("event %d announced %v, waited %v", i, dis[i].Delay, g)
			}
		}
	})
}

func TestPolicyNeverGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{script: alwaysFail}
		start := time.Now()
		s := startSup(t, d, &recorder{}, reconnect.Policy{}) // defaults: 250ms .. 30s
		time.Sleep(40 * time.Minute)
		synctest.Wait()
		if st := s.State(); st != reconnect.Disconnected && st != reconnect.Connecting {
			t.Fatalf("state after 40 minutes: %v", st)
		}
		_ = s.Close()
		as := d.snapshot()
		last := as[len(as)-1].at.Sub(start)
		// backoff's default MaxElapsedTime (15 min) would have stopped it.
		if last < 39*time.Minute {
			t.Fatalf("last attempt at %v: the supervisor gave up", last)
		}
		// After the first few growth steps every base delay is MaxInterval (30s +-50%).
		for i, g := range gaps(as)[10:] {
			if g < 15*time.Second || g > 45*time.Second+1 {
				t.Fatalf("capped delay %d = %v outside [15s, 45s]", i+10, g)
			}
		}
	})
}

func TestPolicyResetAfterStablePeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms := time.Millisecond
		// Attempts 1-3 fail; 4 holds 2s (stable); 5 holds 0.5s; 6 holds 0.1s; 7 fails; 8 stays up.
		hold := map[int]time.Duration{4: 2 * time.Second, 5: 500 * ms, 6: 100 * ms}
		d := &fakeDialer{}
		d.script = func(_ context.Context, n int, _ string) (reconnect.Conn, error) {
			if n <= 3 || n == 7 {
				return nil, errDial
			}
			c := d.newConn()
			if h, ok := hold[n]; ok {
				time.AfterFunc(h, func() { c.lose(errors.New("EOF")) })
			}
			return c, nil
		}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{
			InitialInterval: 100 * ms, MaxInterval: 10 * time.Second, Multiplier: 2,
			Jitter: reconnect.NoJitter, StableAfter: time.Second,
		})
		mustAwait(t, s)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if d.count() != 8 || s.State() != reconnect.Connected {
			t.Fatalf("attempts %d state %v", d.count(), s.State())
		}
		var delays []time.Duration
		for _, ev := range r.of(reconnect.Disconnected) {
			delays = append(delays, ev.Delay)
		}
		// 100,200,400: failures. 100: loss after a stable 2s (reset). 200, 400:
		// losses after 0.5s and 0.1s (no reset: keeps growing). 800: failure.
		want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 100 * ms, 200 * ms, 400 * ms, 800 * ms}
		if len(delays) != len(want) {
			t.Fatalf("delays %v, want %v", delays, want)
		}
		for i := range want {
			if delays[i] != want[i] {
				t.Fatalf("delays %v, want %v", delays, want)
			}
		}
		ups := []time.Duration{}
		for _, ev := range r.of(reconnect.Disconnected) {
			if ev.Uptime > 0 {
				ups = append(ups, ev.Uptime)
			}
		}
		if len(ups) != 3 || ups[0] != 2*time.Second || ups[1] != 500*ms || ups[2] != 100*ms {
			t.Fatalf("uptimes %v", ups)
		}
	})
}

func TestPolicyStableResetStillJitters(t *testing.T) {
	// After a long stable period the first reconnect waits InitialInterval
	// with jitter: never zero, never lockstep.
	synctest.Test(t, func(t *testing.T) {
		const n = 50
		var delays []time.Duration
		for range n {
			d := &fakeDialer{}
			r := &recorder{}
			s := startSup(t, d, r, reconnect.Policy{InitialInterval: time.Second, StableAfter: time.Second})
			mustAwait(t, s)
			time.Sleep(time.Hour)
			d.lastConn().lose(nil)
			synctest.Wait()
			ev := r.of(reconnect.Disconnected)
			if len(ev) != 1 {
				t.Fatalf("events %v", r.snapshot())
			}
			delays = append(delays, ev[0].Delay)
			_ = s.Close()
		}
		lo, hi := delays[0], delays[0]
		for _, dl := range delays {
			if dl < 500*time.Millisecond || dl > 1500*time.Millisecond+1 {
				t.Fatalf("delay %v outside [0.5s, 1.5s]", dl)
			}
			lo, hi = min(lo, dl), max(hi, dl)
		}
		if hi-lo < 300*time.Millisecond {
			t.Fatalf("first reconnect delays barely spread: [%v, %v]", lo, hi)
		}
	})
}

func TestPolicyCloseDuringDelayIsImmediate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{script: alwaysFail}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{InitialInterval: time.Hour})
		synctest.Wait() // first attempt failed; waiting about an hour
		if s.State() != reconnect.Disconnected {
			t.Fatalf("state %v", s.State())
		}
		t0 := time.Now()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(t0); el != 0 {
			t.Fatalf("Close took %v of (fake) time", el)
		}
		if s.State() != reconnect.Closed || d.count() != 1 {
			t.Fatalf("state %v attempts %d", s.State(), d.count())
		}
		evs := r.snapshot()
		last := evs[len(evs)-1]
		if last.State != reconnect.Closed || last.Prev != reconnect.Disconnected || !errors.Is(last.Err, reconnect.ErrClosed) {
			t.Fatalf("last event %v", last)
		}
	})
}

func TestPolicyCloseDuringAttemptCancelsIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cancelled := make(chan error, 1)
		d := &fakeDialer{script: func(ctx context.Context, _ int, _ string) (reconnect.Conn, error) {
			<-ctx.Done()
			cancelled <- ctx.Err()
			return nil, ctx.Err()
		}}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{})
		synctest.Wait()
		if s.State() != reconnect.Connecting {
			t.Fatalf("state %v", s.State())
		}
		t0 := time.Now()
		_ = s.Close()
		if el := time.Since(t0); el != 0 {
			t.Fatalf("Close took %v", el)
		}
		if err := <-cancelled; !errors.Is(err, context.Canceled) {
			t.Fatalf("attempt ctx: %v", err)
		}
		// No Disconnected event for an attempt cancelled by Close.
		var states []reconnect.State
		for _, ev := range r.snapshot() {
			states = append(states, ev.State)
		}
		if len(states) != 2 || states[0] != reconnect.Connecting || states[1] != reconnect.Closed {
			t.Fatalf("states %v", states)
		}
	})
}
