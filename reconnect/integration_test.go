package reconnect_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/internal/faultproxy"
	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// Short intervals keep the Mosquitto tests fast.
var fastPolicy = reconnect.Policy{
	InitialInterval: 50 * time.Millisecond,
	MaxInterval:     time.Second,
	StableAfter:     300 * time.Millisecond,
}

// rig starts Mosquitto and a fault proxy in front of it.
func rig(t *testing.T, opts testbroker.MosquittoOptions) (*testbroker.Mosquitto, *faultproxy.Proxy) {
	t.Helper()
	m := testbroker.StartMosquitto(t, opts)
	p, err := faultproxy.New(m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return m, p
}

func awaitConn(t *testing.T, s *reconnect.Supervisor, timeout time.Duration) *pahoConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := s.AwaitConnected(ctx)
	if err != nil {
		t.Fatalf("AwaitConnected: %v", err)
	}
	return c.(*pahoConn)
}

func lastOf(evs []reconnect.Event, st reconnect.State) (reconnect.Event, bool) {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].State == st {
			return evs[i], true
		}
	}
	return reconnect.Event{}, false
}

func TestMosquittoBrokerDownAtStart(t *testing.T) {
	m, p := rig(t, testbroker.MosquittoOptions{})
	m.Stop(t)
	d := &device{id: "down-at-start"}
	s, r := startDevice(t, d, fastPolicy, p.URL())
	r.waitFor(t, 10*time.Second, "4 failed attempts", func(evs []reconnect.Event) bool {
		return countState(evs, reconnect.Disconnected) >= 4
	})
	if s.State() == reconnect.Connected {
		t.Fatal("connected to a stopped broker")
	}
	m.Start(t)
	up := time.Now()
	awaitConn(t, s, 10*time.Second)
	evs := r.waitFor(t, 5*time.Second, "the Connected event", func(evs []reconnect.Event) bool {
		return countState(evs, reconnect.Connected) == 1
	})
	conn, _ := lastOf(evs, reconnect.Connected)
	var wait reconnect.Event // the backoff interval the successful attempt followed
	for _, ev := range evs {
		if ev.State == reconnect.Disconnected && ev.At.Before(conn.At) {
			wait = ev
		}
	}
	if wait.Err == nil {
		t.Fatalf("no failure before connecting: %v", evs)
	}
	lat := conn.At.Sub(up)
	t.Logf("broker up -> connected in %v (backoff interval then %v, %d attempts)", lat, wait.Delay, d.attempts.Load())
	if lat > wait.Delay+750*time.Millisecond {
		t.Fatalf("connected %v after the broker came up; the interval was %v", lat, wait.Delay)
	}
}

func TestMosquittoFiftyCuts(t *testing.T) {
	_, p := rig(t, testbroker.MosquittoOptions{})
	d := &device{id: "fifty-cuts"}
	s, r := startDevice(t, d, fastPolicy, p.URL())
	const cuts, block = 50, 4
	var prev *pahoConn
	type cutRec struct {
		delay, uptime time.Duration
		err           error
	}
	var recs []cutRec
	for i := range cuts {
		c := awaitConn(t, s, 10*time.Second)
		if c == prev {
			t.Fatalf("cut %d: AwaitConnected returned the lost connection", i)
		}
		prev = c
		if i%block == 0 {
			time.Sleep(fastPolicy.StableAfter + 100*time.Millisecond) // a stable connection
		}
		p.Cut()
		evs := r.waitFor(t, 5*time.Second, fmt.Sprintf("loss %d", i+1), func(evs []reconnect.Event) bool {
			n := 0
			for _, ev := range evs {
				if ev.State == reconnect.Disconnected && ev.Prev == reconnect.Connected {
					n++
				}
			}
			return n == i+1
		})
		ev, _ := lastOf(evs, reconnect.Disconnected)
		recs = append(recs, cutRec{ev.Delay, ev.Uptime, ev.Err})
	}
	awaitConn(t, s, 10*time.Second)
	st := s.Stats()
	if st.Losses != cuts || st.Connects != cuts+1 {
		t.Fatalf("stats %+v", st)
	}
	// Replay the policy on the uptimes actually observed: a connection that
	// stayed up StableAfter resets the backoff, a shorter one lets it grow.
	init, maxI := fastPolicy.InitialInterval, fastPolicy.MaxInterval
	var resets, grown []time.Duration
	k := -1 // growth steps since the last reset
	for i, rc := range recs {
		if !errors.Is(rc.err, reconnect.ErrConnectionLost) {
			t.Fatalf("cut %d: cause %v", i, rc.err)
		}
		if rc.uptime >= fastPolicy.StableAfter {
			k = 0
		} else {
			k++
		}
		if k < 0 {
			t.Fatalf("cut %d: the first connection was not stable (uptime %v)", i, rc.uptime)
		}
		base := min(init<<k, maxI)
		if rc.delay < base/2 || rc.delay > base*3/2+1 {
			t.Fatalf("cut %d (step %d, uptime %v): delay %v outside [%v, %v]", i, k, rc.uptime, rc.delay, base/2, base*3/2)
		}
		switch k {
		case 0:
			resets = append(resets, rc.delay)
		case block - 1:
			grown = append(grown, rc.delay)
		}
	}
	// The schedule above makes 13 stable connections and 12 runs of 3 quick cuts.
	if len(resets) < 10 || len(grown) < 10 {
		t.Fatalf("too few resets (%d) or grown delays (%d) observed", len(resets), len(grown))
	}
	t.Logf("%d cuts, %d reconnects, %d attempts; delays after a stable link %v; after %d quick cuts %v",
		cuts, st.Connects-1, st.Attempts, resets, block-1, grown)
}

func TestMosquittoBlackholeDetectedByKeepalive(t *testing.T) {
	_, p := rig(t, testbroker.MosquittoOptions{})
	const keepAlive = 2 * time.Second
	d := &device{id: "blackhole", keepAlive: keepAlive, pingTimeout: 400 * time.Millisecond}
	s, r := startDevice(t, d, fastPolicy, p.URL())
	c := awaitConn(t, s, 10*time.Second)
	p.SetBlackhole(true)
	start := time.Now()
	select {
	case <-c.Done():
	case <-time.After(3 * keepAlive):
		t.Fatalf("black hole not detected within %v", 3*keepAlive)
	}
	detect := time.Unix(0, c.lostAt.Load()).Sub(start)
	p.SetBlackhole(false)
	if !strings.Contains(fmt.Sprint(c.Err()), "pingresp not received") {
		t.Fatalf("lost for another reason than keepalive: %v", c.Err())
	}
	evs := r.waitFor(t, 5*time.Second, "the loss event", func(evs []reconnect.Event) bool {
		return countState(evs, reconnect.Disconnected) == 1
	})
	ev, _ := lastOf(evs, reconnect.Disconnected)
	if !errors.Is(ev.Err, reconnect.ErrConnectionLost) || !strings.Contains(ev.Err.Error(), "pingresp") {
		t.Fatalf("event cause %v", ev.Err)
	}
	t.Logf("black hole detected after %v (keepalive %v, ratio %.2f)", detect, keepAlive, float64(detect)/float64(keepAlive))
	if detect > keepAlive*3/2+500*time.Millisecond {
		t.Fatalf("detection took %v, over 1.5x keepalive (%v)", detect, keepAlive*3/2)
	}
	awaitConn(t, s, 10*time.Second)
}

func TestMosquittoRestart(t *testing.T) {
	m, p := rig(t, testbroker.MosquittoOptions{})
	d := &device{id: "restart"}
	s, r := startDevice(t, d, fastPolicy, p.URL())
	c1 := awaitConn(t, s, 10*time.Second)
	m.Restart(t)
	<-c1.Done()
	c2 := awaitConn(t, s, 10*time.Second)
	evs := r.waitFor(t, 5*time.Second, "the second Connected event", func(evs []reconnect.Event) bool {
		return countState(evs, reconnect.Connected) == 2
	})
	var lost reconnect.Event
	for _, ev := range evs {
		if ev.State == reconnect.Disconnected && ev.Prev == reconnect.Connected {
			lost = ev
			break
		}
	}
	if !errors.Is(lost.Err, reconnect.ErrConnectionLost) {
		t.Fatalf("loss cause %v", lost.Err)
	}
	if !c2.sessionPresent {
		t.Fatal("persistent session lost across a graceful restart")
	}
	t.Logf("restart: lost with %q after %v up; reconnected at attempt %d", lost.Err, lost.Uptime, evs[len(evs)-1].Attempt)
}

func TestMosquittoWrongPasswordIsPermanent(t *testing.T) {
	users := map[string]string{"dev": "right"}
	m, p := rig(t, testbroker.MosquittoOptions{Users: users})
	_ = m

	t.Run("right password connects", func(t *testing.T) {
		d := &device{id: "pw-ok", user: "dev", pass: "right"}
		s, _ := startDevice(t, d, fastPolicy, p.URL())
		awaitConn(t, s, 10*time.Second)
	})

	t.Run("stop, paho errors through IsPermanent", func(t *testing.T) {
		d := &device{id: "pw-stop", user: "dev", pass: "wrong"}
		s, r := startDevice(t, d, fastPolicy, p.URL())
		r.waitFor(t, 10*time.Second, "Stopped", func(evs []reconnect.Event) bool {
			return countState(evs, reconnect.Stopped) == 1
		})
		_, err := s.AwaitConnected(context.Background())
		if !errors.Is(err, reconnect.ErrStopped) || !pahoIsPermanent(err) {
			t.Fatalf("AwaitConnected: %v", err)
		}
		time.Sleep(time.Second) // a window in which a retry loop would show
		if n := d.attempts.Load(); n != 1 {
			t.Fatalf("%d attempts after a permanent refusal, want 1", n)
		}
		t.Logf("stopped after 1 attempt: %v", err)
	})

	t.Run("slow, RefusedError", func(t *testing.T) {
		d := &device{id: "pw-slow", user: "dev", pass: "wrong", mapRefusals: true}
		pol := fastPolicy
		pol.OnPermanent = reconnect.SlowOnPermanent
		pol.PermanentInterval = 400 * time.Millisecond
		s, r := startDevice(t, d, pol, p.URL())
		window := 2 * time.Second
		time.Sleep(window)
		n := d.attempts.Load()
		// 400ms +-50%: at most 1 + 2s/200ms = 11; a tight loop would make hundreds.
		if n < 2 || n > 11 {
			t.Fatalf("%d attempts in %v with a 400ms permanent interval", n, window)
		}
		var re *reconnect.RefusedError
		ev, _ := lastOf(r.snapshot(), reconnect.Disconnected)
		if !errors.As(ev.Err, &re) || !re.Code.Permanent() || ev.Delay < 200*time.Millisecond {
			t.Fatalf("event %v", ev)
		}
		if s.State() == reconnect.Connected || s.State() == reconnect.Stopped {
			t.Fatalf("state %v", s.State())
		}
		t.Logf("slow: %d attempts in %v, refusal code %d (%v)", n, window, re.Code, re.Code)
	})
}

func TestMosquittoFailover(t *testing.T) {
	_, p := rig(t, testbroker.MosquittoOptions{})
	dead := "tcp://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(testbroker.FreePort(t)))
	d := &device{id: "failover"}
	s, r := startDevice(t, d, fastPolicy, dead, p.URL())
	awaitConn(t, s, 10*time.Second)
	if b, _ := s.Current(); b != p.URL() {
		t.Fatalf("current broker %q, want %q", b, p.URL())
	}
	evs := r.waitFor(t, 5*time.Second, "the Connected event", func(evs []reconnect.Event) bool {
		return countState(evs, reconnect.Connected) == 1
	})
	if len(evs) < 4 || evs[0].Broker != dead || evs[1].State != reconnect.Disconnected || evs[1].Broker != dead ||
		evs[2].Broker != p.URL() || evs[3].State != reconnect.Connected || evs[3].Broker != p.URL() {
		t.Fatalf("events %v", evs)
	}
	t.Logf("failover: %v on the dead broker, connected to the second %v after Start", evs[1].Err, evs[3].At.Sub(evs[0].At))
	// Lost: the working broker is tried first again.
	p.Cut()
	r.waitFor(t, 10*time.Second, "reconnect", func(evs []reconnect.Event) bool {
		return countState(evs, reconnect.Connected) == 2
	})
	evs = r.snapshot()
	for i, ev := range evs {
		if ev.State == reconnect.Disconnected && ev.Prev == reconnect.Connected {
			if next := evs[i+1]; next.State != reconnect.Connecting || next.Broker != p.URL() || next.Attempt != 1 {
				t.Fatalf("after a loss the first attempt was %v", next)
			}
			break
		}
	}
}

func TestMosquittoCloseDuringBackoff(t *testing.T) {
	_, p := rig(t, testbroker.MosquittoOptions{})
	p.SetRefuse(true)
	ignore := leakcheck.IgnoreCurrent() // the broker and the proxy
	d := &device{id: "close-in-backoff"}
	pol := fastPolicy
	pol.InitialInterval, pol.MaxInterval = 10*time.Second, 10*time.Second
	r := &recorder{}
	s, err := reconnect.New(reconnect.Config{Brokers: []string{p.URL()}, Connect: d.connect, Policy: pol, OnEvent: r.on})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	evs := r.waitFor(t, 10*time.Second, "a failed attempt", func(evs []reconnect.Event) bool {
		return countState(evs, reconnect.Disconnected) == 1
	})
	t0 := time.Now()
	_ = s.Close()
	el := time.Since(t0)
	t.Logf("Close during a %v backoff wait returned in %v (attempt error: %v)", evs[1].Delay, el, evs[1].Err)
	if el > 250*time.Millisecond {
		t.Fatalf("Close took %v", el)
	}
	if s.State() != reconnect.Closed || d.attempts.Load() != 1 {
		t.Fatalf("state %v, attempts %d", s.State(), d.attempts.Load())
	}
	leakcheck.VerifyNone(t, ignore)
}

// TestMosquittoNoLockstep: clients that lose the broker together do not
// reconnect together.
func TestMosquittoNoLockstep(t *testing.T) {
	_, p := rig(t, testbroker.MosquittoOptions{})
	const n = 20
	measure := func(t *testing.T, jitter float64) time.Duration {
		pol := reconnect.Policy{InitialInterval: time.Second, MaxInterval: 2 * time.Second, StableAfter: 100 * time.Millisecond, Jitter: jitter}
		var sups []*reconnect.Supervisor
		var recs []*recorder
		for i := range n {
			d := &device{id: fmt.Sprintf("herd-%v-%d", jitter, i)}
			s, r := startDevice(t, d, pol, p.URL())
			sups, recs = append(sups, s), append(recs, r)
		}
		for _, s := range sups {
			awaitConn(t, s, 10*time.Second)
		}
		time.Sleep(pol.StableAfter + 100*time.Millisecond) // every connection stable
		cut := time.Now()
		p.Cut()
		var lo, hi time.Duration = 1 << 62, 0
		for _, r := range recs {
			evs := r.waitFor(t, 10*time.Second, "first reconnect attempt", func(evs []reconnect.Event) bool {
				return countState(evs, reconnect.Connecting) >= 2
			})
			var first time.Time
			for _, ev := range evs {
				if ev.State == reconnect.Connecting && ev.At.After(cut) {
					first = ev.At
					break
				}
			}
			dt := first.Sub(cut)
			lo, hi = min(lo, dt), max(hi, dt)
		}
		for _, s := range sups {
			awaitConn(t, s, 10*time.Second)
		}
		t.Logf("%d clients, jitter %v: first reconnect attempts %v..%v after the cut, spread %v", n, jitter, lo, hi, hi-lo)
		return hi - lo
	}
	var spread, control time.Duration
	t.Run("jitter", func(t *testing.T) { spread = measure(t, 0.5) })
	t.Run("control without jitter", func(t *testing.T) { control = measure(t, reconnect.NoJitter) })
	// Uniform over [0.5s, 1.5s]: 20 draws span well over 0.4s (P(less) ~ 1e-6).
	if spread < 400*time.Millisecond {
		t.Fatalf("spread with jitter %v: clients reconnect in lockstep", spread)
	}
	// Without jitter only the loss detection skew remains (about 0.1s here;
	// more on a loaded machine): the measure can tell the two apart.
	if control >= spread {
		t.Fatalf("control spread without jitter %v is not below the spread with jitter %v", control, spread)
	}
}
