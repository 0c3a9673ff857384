//go:build go1.25

package reconnect_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// checkChain verifies that events form one chain of transitions starting
// from Disconnected and that each Prev is the previous event's State.
func checkChain(t *testing.T, evs []reconnect.Event) {
	t.Helper()
	prev := reconnect.Disconnected
	for i, ev := range evs {
		if ev.Prev != prev {
			t.Fatalf("event %d %v: Prev %v, want %v", i, ev, ev.Prev, prev)
		}
		if ev.At.IsZero() || ev.Broker == "" {
			t.Fatalf("event %d %v lacks At or Broker", i, ev)
		}
		prev = ev.State
	}
}

func TestSupervisorEventsCarryCauses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refusal := &reconnect.RefusedError{Code: reconnect.ConnackServerUnavailable, Err: errors.New("server Unavailable")}
		d := &fakeDialer{}
		d.script = func(_ context.Context, n int, _ string) (reconnect.Conn, error) {
			switch n {
			case 1:
				return nil, errDial
			case 2:
				return nil, refusal
			}
			return d.newConn(), nil
		}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{InitialInterval: 100 * time.Millisecond, Jitter: reconnect.NoJitter})
		conn := mustAwait(t, s)
		if conn != d.lastConn() {
			t.Fatalf("AwaitConnected: %v", conn)
		}
		if b, c := s.Current(); b != "tcp://a:1883" || c != conn {
			t.Fatalf("Current: %q %v", b, c)
		}
		time.Sleep(3 * time.Second)
		d.lastConn().lose(io.EOF)
		synctest.Wait()
		if b, c := s.Current(); c != nil || b != "tcp://a:1883" {
			t.Fatalf("Current after loss: %q %v", b, c)
		}
		if conn2 := mustAwait(t, s); conn2 == conn {
			t.Fatalf("AwaitConnected after loss returned the lost Conn")
		}
		_ = s.Close()

		evs := r.snapshot()
		checkChain(t, evs)
		want := []reconnect.State{
			reconnect.Connecting, reconnect.Disconnected, // dial error
			reconnect.Connecting, reconnect.Disconnected, // server unavailable (transient)
			reconnect.Connecting, reconnect.Connected,
			reconnect.Disconnected, // EOF
			reconnect.Connecting, reconnect.Connected,
			reconnect.Closed,
		}
		var got []reconnect.State
		for _, ev := range evs {
			got = append(got, ev.State)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("states %v, want %v", got, want)
		}
		if !errors.Is(evs[1].Err, errDial) || evs[1].Attempt != 1 {
			t.Fatalf("dial failure event %v", evs[1])
		}
		if !errors.Is(evs[3].Err, reconnect.ErrRefused) || reconnect.IsPermanent(evs[3].Err) || evs[3].Attempt != 2 {
			t.Fatalf("refusal event %v", evs[3])
		}
		if evs[4].Delay != 200*time.Millisecond || evs[5].Attempt != 3 {
			t.Fatalf("third attempt %v / %v", evs[4], evs[5])
		}
		lost := evs[6]
		if !errors.Is(lost.Err, reconnect.ErrConnectionLost) || !errors.Is(lost.Err, io.EOF) ||
			lost.Attempt != 0 || lost.Uptime != 3*time.Second {
			t.Fatalf("loss event %v", lost)
		}
		if evs[7].Attempt != 1 {
			t.Fatalf("attempts restart from 1 after a connection: %v", evs[7])
		}
		if !errors.Is(evs[9].Err, reconnect.ErrClosed) {
			t.Fatalf("closed event %v", evs[9])
		}
		st := s.Stats()
		if st.Attempts != 4 || st.Connects != 2 || st.Failures != 2 || st.Losses != 1 || st.Permanent != 0 ||
			st.State != reconnect.Closed {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestSupervisorLossWithoutErr(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{})
		mustAwait(t, s)
		d.lastConn().lose(nil)
		synctest.Wait()
		ev := r.of(reconnect.Disconnected)
		if len(ev) != 1 || ev[0].Err != reconnect.ErrConnectionLost {
			t.Fatalf("events %v", ev)
		}
	})
}

func TestSupervisorAwaitConnected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{}
		d.script = func(_ context.Context, n int, _ string) (reconnect.Conn, error) {
			if n < 4 {
				return nil, errDial
			}
			return d.newConn(), nil
		}
		s, err := reconnect.New(reconnect.Config{
			Brokers: []string{"tcp://a:1883"}, Connect: d.connect,
			Policy: reconnect.Policy{InitialInterval: time.Second, Jitter: reconnect.NoJitter},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Close() }()

		// Before Start: waits (here, until its ctx expires).
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err = s.AwaitConnected(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || d.count() != 0 {
			t.Fatalf("before Start: %v, %d attempts", err, d.count())
		}

		// Several waiters are all released by the same transition.
		start := time.Now()
		type res struct {
			c  reconnect.Conn
			at time.Duration
		}
		results := make(chan res, 3)
		for range 3 {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				defer cancel()
				c, err := s.AwaitConnected(ctx)
				if err != nil {
					t.Error(err)
				}
				results <- res{c, time.Since(start)}
			}()
		}
		// A short ctx expires during the backoff.
		ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		s.Start()
		if _, err := s.AwaitConnected(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("short ctx: %v", err)
		}
		// Attempts at 0, 1s, 3s, 7s: connected at 7s.
		for range 3 {
			r := <-results
			if r.c == nil || r.c != d.lastConn() || r.at != 7*time.Second {
				t.Fatalf("waiter got %v at %v", r.c, r.at)
			}
		}
		// While connected it returns at once.
		if c, err := s.AwaitConnected(context.Background()); err != nil || c != d.lastConn() {
			t.Fatalf("connected: %v %v", c, err)
		}
		_ = s.Close()
		if _, err := s.AwaitConnected(context.Background()); !errors.Is(err, reconnect.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	})
}

func TestSupervisorAwaitReleasedByClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{script: alwaysFail}
		s := startSup(t, d, &recorder{}, reconnect.Policy{})
		errc := make(chan error, 1)
		go func() {
			_, err := s.AwaitConnected(context.Background())
			errc <- err
		}()
		synctest.Wait()
		_ = s.Close()
		if err := <-errc; !errors.Is(err, reconnect.ErrClosed) {
			t.Fatalf("waiter: %v", err)
		}
	})
}

func TestSupervisorChanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{script: alwaysFail}
		s, err := reconnect.New(reconnect.Config{Brokers: []string{"tcp://a"}, Connect: d.connect})
		if err != nil {
			t.Fatal(err)
		}
		ch := s.Changed()
		select {
		case <-ch:
			t.Fatal("Changed closed before any transition")
		default:
		}
		s.Start()
		<-ch // Connecting
		if st := s.State(); st != reconnect.Connecting && st != reconnect.Disconnected {
			t.Fatalf("state %v", st)
		}
		ch = s.Changed()
		_ = s.Close()
		<-ch
		// After Closed every later Changed is already closed: no waiter hangs.
		<-s.Changed()
	})
}

func TestSupervisorPermanentStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refusal := &reconnect.RefusedError{Code: reconnect.ConnackBadUsernameOrPassword, Err: errors.New("bad user name or password")}
		d := &fakeDialer{script: func(context.Context, int, string) (reconnect.Conn, error) { return nil, refusal }}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{InitialInterval: 10 * time.Millisecond})
		time.Sleep(time.Hour)
		synctest.Wait()
		if d.count() != 1 || s.State() != reconnect.Stopped {
			t.Fatalf("after an hour: %d attempts, state %v", d.count(), s.State())
		}
		_, err := s.AwaitConnected(context.Background())
		var re *reconnect.RefusedError
		if !errors.Is(err, reconnect.ErrStopped) || !errors.Is(err, reconnect.ErrRefused) ||
			!errors.As(err, &re) || re.Code != reconnect.ConnackBadUsernameOrPassword || !reconnect.IsPermanent(err) {
			t.Fatalf("AwaitConnected: %v", err)
		}
		evs := r.snapshot()
		checkChain(t, evs)
		if last := evs[len(evs)-1]; last.State != reconnect.Stopped || last.Prev != reconnect.Connecting ||
			!errors.Is(last.Err, refusal) || last.Attempt != 1 {
			t.Fatalf("stop event %v", last)
		}

		// RetryNow restarts at once; still refused: stopped again.
		t0 := time.Now()
		s.RetryNow()
		synctest.Wait()
		as := d.snapshot()
		if len(as) != 2 || !as[1].at.Equal(t0) || s.State() != reconnect.Stopped {
			t.Fatalf("after RetryNow: attempts %v state %v", as, s.State())
		}
		// Credentials fixed: RetryNow connects.
		d.setScript(nil)
		s.RetryNow()
		mustAwait(t, s)
		if st := s.Stats(); st.Permanent != 2 || st.Connects != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func TestSupervisorPermanentSlows(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refusal := &reconnect.RefusedError{Code: reconnect.ConnackNotAuthorized}
		d := &fakeDialer{script: func(context.Context, int, string) (reconnect.Conn, error) { return nil, refusal }}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{
			InitialInterval: 10 * time.Millisecond, OnPermanent: reconnect.SlowOnPermanent,
			PermanentInterval: 5 * time.Minute, Jitter: reconnect.NoJitter,
		})
		time.Sleep(59 * time.Minute)
		synctest.Wait()
		// Attempts at 0, 5, 10, ... 55 minutes.
		if n := d.count(); n != 12 {
			t.Fatalf("%d attempts in 59 minutes, want 12", n)
		}
		for i, g := range gaps(d.snapshot()) {
			if g != 5*time.Minute {
				t.Fatalf("gap %d = %v", i, g)
			}
		}
		if s.State() != reconnect.Disconnected {
			t.Fatalf("state %v", s.State())
		}
		for _, ev := range r.of(reconnect.Disconnected) {
			if !reconnect.IsPermanent(ev.Err) || ev.Delay != 5*time.Minute {
				t.Fatalf("event %v", ev)
			}
		}
		// RetryNow cuts the long wait short.
		t0 := time.Now()
		s.RetryNow()
		synctest.Wait()
		if as := d.snapshot(); len(as) != 13 || !as[12].at.Equal(t0) {
			t.Fatalf("RetryNow did not attempt at once")
		}
	})
}

func TestSupervisorPermanentSlowJitters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{script: func(context.Context, int, string) (reconnect.Conn, error) {
			return nil, reconnect.Permanent(errors.New("identifier rejected"))
		}}
		startSup(t, d, &recorder{}, reconnect.Policy{OnPermanent: reconnect.SlowOnPermanent, PermanentInterval: time.Minute})
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		gs := gaps(d.snapshot())
		if len(gs) < 60 {
			t.Fatalf("only %d retries", len(gs))
		}
		distinct := map[time.Duration]bool{}
		for _, g := range gs {
			if g < 30*time.Second || g > 90*time.Second {
				t.Fatalf("slow delay %v outside [30s, 90s]", g)
			}
			distinct[g] = true
		}
		if len(distinct) < len(gs)/2 {
			t.Fatalf("slow delays not randomised: %v", gs)
		}
	})
}

func TestSupervisorIsPermanentHook(t *testing.T) {
	errBadCreds := errors.New("bad user name or password") // as an MQTT library would report it
	for _, hook := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			d := &fakeDialer{script: func(context.Context, int, string) (reconnect.Conn, error) {
				return nil, errors.Join(errors.New("connect"), errBadCreds)
			}}
			cfg := reconnect.Config{Brokers: []string{"tcp://a"}, Connect: d.connect,
				Policy: reconnect.Policy{InitialInterval: 10 * time.Millisecond, MaxInterval: time.Second}}
			if hook {
				cfg.IsPermanent = func(err error) bool { return errors.Is(err, errBadCreds) }
			}
			s, err := reconnect.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			s.Start()
			time.Sleep(time.Minute)
			synctest.Wait()
			_ = s.Close()
			if hook && d.count() != 1 {
				t.Fatalf("hook: %d attempts, want 1", d.count())
			}
			if !hook && d.count() < 50 {
				t.Fatalf("no hook: %d attempts, want it retried", d.count())
			}
		})
	}
}

func TestSupervisorFailover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex // guards up
		up := map[string]bool{"tcp://c": true}
		setUp := func(b string, v bool) { mu.Lock(); up[b] = v; mu.Unlock() }
		d := &fakeDialer{}
		d.script = func(_ context.Context, _ int, broker string) (reconnect.Conn, error) {
			mu.Lock()
			ok := up[broker]
			mu.Unlock()
			if !ok {
				return nil, errDial
			}
			return d.newConn(), nil
		}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{InitialInterval: 10 * time.Millisecond}, "tcp://a", "tcp://b", "tcp://c")
		mustAwait(t, s)
		if b, _ := s.Current(); b != "tcp://c" {
			t.Fatalf("current %q", b)
		}
		// Lost: the same broker is tried first; it fails now, so a, b, then c again.
		setUp("tcp://c", false)
		d.lastConn().lose(io.EOF)
		synctest.Wait()
		setUp("tcp://a", true)
		time.Sleep(time.Minute)
		synctest.Wait()
		var brokers []string
		for _, a := range d.snapshot() {
			brokers = append(brokers, a.broker)
		}
		want := []string{"tcp://a", "tcp://b", "tcp://c", "tcp://c", "tcp://a"}
		if !slices.Equal(brokers, want) {
			t.Fatalf("attempt order %v, want %v", brokers, want)
		}
		for _, ev := range r.snapshot() {
			if ev.State == reconnect.Connected && ev.Broker != "tcp://c" && ev.Broker != "tcp://a" {
				t.Fatalf("connected event on %q", ev.Broker)
			}
		}
		conn := r.of(reconnect.Connected)
		if len(conn) != 2 || conn[0].Broker != "tcp://c" || conn[1].Broker != "tcp://a" || conn[1].Attempt != 2 {
			t.Fatalf("connected events %v", conn)
		}
	})
}

func TestSupervisorPermanentOnOneBrokerFailsOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		refusal := &reconnect.RefusedError{Code: reconnect.ConnackNotAuthorized}
		var bOK atomic.Bool
		bOK.Store(true)
		d := &fakeDialer{}
		d.script = func(_ context.Context, _ int, broker string) (reconnect.Conn, error) {
			if broker == "tcp://b" && bOK.Load() {
				return d.newConn(), nil
			}
			return nil, refusal
		}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{InitialInterval: 10 * time.Millisecond}, "tcp://a", "tcp://b")
		mustAwait(t, s)
		// Now b refuses too: b, then a, refuse permanently in a row: stop.
		bOK.Store(false)
		d.lastConn().lose(io.EOF)
		time.Sleep(time.Hour)
		synctest.Wait()
		if s.State() != reconnect.Stopped || d.count() != 4 {
			t.Fatalf("state %v after %d attempts", s.State(), d.count())
		}
	})
}

func TestSupervisorAttemptTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{script: func(ctx context.Context, _ int, _ string) (reconnect.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}}
		r := &recorder{}
		s, err := reconnect.New(reconnect.Config{
			Brokers: []string{"tcp://a"}, Connect: d.connect, OnEvent: r.on, AttemptTimeout: 2 * time.Second,
			Policy: reconnect.Policy{InitialInterval: time.Second, Jitter: reconnect.NoJitter},
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		time.Sleep(4 * time.Second)
		synctest.Wait()
		_ = s.Close()
		dis := r.of(reconnect.Disconnected)
		if len(dis) != 1 || !errors.Is(dis[0].Err, context.DeadlineExceeded) || reconnect.IsPermanent(dis[0].Err) {
			t.Fatalf("events %v", r.snapshot())
		}
		// Attempts at 0 and 3s (2s timeout + 1s delay).
		if g := gaps(d.snapshot()); len(g) != 1 || g[0] != 3*time.Second {
			t.Fatalf("gaps %v", g)
		}
	})
}

func TestSupervisorNilConnNilErr(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{script: func(context.Context, int, string) (reconnect.Conn, error) { return nil, nil }}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{})
		synctest.Wait()
		_ = s.Close()
		if dis := r.of(reconnect.Disconnected); len(dis) != 1 || !errors.Is(dis[0].Err, reconnect.ErrNoConn) {
			t.Fatalf("events %v", r.snapshot())
		}
	})
}

func TestSupervisorRetryNowWhileConnectedIsStale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{InitialInterval: time.Minute, Jitter: reconnect.NoJitter})
		mustAwait(t, s)
		s.RetryNow() // nothing to cut short
		d.lastConn().lose(io.EOF)
		synctest.Wait()
		if d.count() != 1 {
			t.Fatalf("a stale RetryNow skipped the delay: %d attempts", d.count())
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if d.count() != 2 {
			t.Fatalf("%d attempts after the delay", d.count())
		}
	})
}

func TestSupervisorCloseBeforeStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{}
		r := &recorder{}
		s, err := reconnect.New(reconnect.Config{Brokers: []string{"tcp://a"}, Connect: d.connect, OnEvent: r.on})
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		_ = s.Close()
		s.Start()
		synctest.Wait()
		evs := r.snapshot()
		if d.count() != 0 || s.State() != reconnect.Closed || len(evs) != 1 || evs[0].State != reconnect.Closed ||
			evs[0].Prev != reconnect.Disconnected || evs[0].Broker != "" {
			t.Fatalf("attempts %d state %v events %v", d.count(), s.State(), evs)
		}
	})
}

func TestSupervisorConcurrentClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{}
		r := &recorder{}
		s := startSup(t, d, r, reconnect.Policy{})
		mustAwait(t, s)
		done := make(chan struct{})
		for range 4 {
			go func() {
				_ = s.Close()
				if s.State() != reconnect.Closed {
					t.Error("Close returned before Closed")
				}
				done <- struct{}{}
			}()
		}
		for range 4 {
			<-done
		}
		if n := len(r.of(reconnect.Closed)); n != 1 {
			t.Fatalf("%d Closed events", n)
		}
		// Closing while connected leaves the Conn to its owner.
		if b, c := s.Current(); c != d.lastConn() || b != "tcp://a:1883" {
			t.Fatalf("Current after Close: %q %v", b, c)
		}
		select {
		case <-d.lastConn().Done():
			t.Fatal("the supervisor closed the Conn")
		default:
		}
	})
}

func TestSupervisorConnSucceedingDuringCloseIsKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := &fakeDialer{}
		d.script = func(ctx context.Context, _ int, _ string) (reconnect.Conn, error) {
			<-ctx.Done()
			return d.newConn(), nil // a ConnectFunc that finished anyway
		}
		s := startSup(t, d, &recorder{}, reconnect.Policy{})
		synctest.Wait()
		_ = s.Close()
		if _, c := s.Current(); c == nil || c != d.lastConn() {
			t.Fatalf("Current after Close: %v", c)
		}
	})
}

// TestSupervisorNoLockstep: many supervisors losing their connections at the
// same instant do not come back at the same instant.
func TestSupervisorNoLockstep(t *testing.T) {
	run := func(t *testing.T, jitter float64) (spread time.Duration) {
		synctest.Test(t, func(t *testing.T) {
			const n = 100
			var dialers []*fakeDialer
			for range n {
				d := &fakeDialer{}
				dialers = append(dialers, d)
				s := startSup(t, d, &recorder{}, reconnect.Policy{InitialInterval: time.Second, Jitter: jitter})
				mustAwait(t, s)
			}
			time.Sleep(time.Minute) // stable
			cut := time.Now()
			for _, d := range dialers {
				d.lastConn().lose(io.EOF)
			}
			time.Sleep(10 * time.Second)
			synctest.Wait()
			lo, hi := time.Duration(1<<62), time.Duration(0)
			for _, d := range dialers {
				as := d.snapshot()
				if len(as) != 2 {
					t.Fatalf("%d attempts", len(as))
				}
				dt := as[1].at.Sub(cut)
				lo, hi = min(lo, dt), max(hi, dt)
			}
			spread = hi - lo
			t.Logf("jitter %v: first reconnects between %v and %v after the loss (spread %v)", jitter, lo, hi, spread)
		})
		return spread
	}
	if sp := run(t, 0.5); sp < 800*time.Millisecond {
		t.Fatalf("with jitter 0.5 the spread is only %v (expected about 1s)", sp)
	}
	// Control: without jitter they do move in lockstep, so the measure above can fail.
	if sp := run(t, reconnect.NoJitter); sp != 0 {
		t.Fatalf("without jitter the spread is %v, want 0", sp)
	}
}
