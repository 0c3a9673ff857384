package e2e

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// The tests in this file check the harness itself; they are fast and run
// with -short too.

func TestScheduleDeterministicAndComplete(t *testing.T) {
	for _, total := range []time.Duration{60 * time.Second, 75 * time.Second, 10 * time.Minute} {
		p := defaultParams(total, 2)
		a, b := NewSchedule(7, p), NewSchedule(7, p)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%v: the same seed gave two schedules", total)
		}
		if reflect.DeepEqual(a, NewSchedule(8, p)) {
			t.Errorf("%v: seeds 7 and 8 gave the same schedule", total)
		}
		n := countKinds(a)
		minutes := total.Minutes()
		switch {
		case n[EvRestart] < p.MinRestarts, n[EvOutage] < p.MinOutages, n[EvBlackholeStart] < p.MinBlackholes,
			n[EvBlackholeEnd] != n[EvBlackholeStart], float64(n[EvCut]) < 5*minutes:
			t.Errorf("%v: too few faults: %v", total, n)
		}
		kills := map[int][]time.Duration{}
		var windows [][2]time.Duration
		for i, e := range a {
			if e.At < 0 || e.At > total {
				t.Errorf("%v: event %v outside the phase", total, e)
			}
			if i > 0 && e.At < a[i-1].At {
				t.Errorf("%v: events not sorted: %v before %v", total, a[i-1], e)
			}
			switch e.Kind {
			case EvKill:
				kills[e.Lane] = append(kills[e.Lane], e.At)
			case EvOutage, EvBlackholeStart:
				windows = append(windows, [2]time.Duration{e.At, e.At + e.Dur})
				if e.Kind == EvOutage && (e.Dur < p.OutageMin || e.Dur > p.OutageMax) {
					t.Errorf("%v: outage %v out of bounds", total, e)
				}
			case EvRestart:
				windows = append(windows, [2]time.Duration{e.At, e.At + p.RestartWindow})
			}
		}
		for lane := range 2 {
			k := kills[lane]
			if len(k) < p.MinKills {
				t.Errorf("%v: lane %d: %d kills", total, lane, len(k))
			}
			for i := 1; i < len(k); i++ {
				if k[i]-k[i-1] < p.MinKillGap {
					t.Errorf("%v: lane %d: kills %v and %v too close", total, lane, k[i-1], k[i])
				}
			}
		}
		for i, w := range windows {
			for _, o := range windows[i+1:] {
				if w[0] < o[1]+p.WindowGap && o[0] < w[1]+p.WindowGap {
					t.Errorf("%v: windows %v and %v overlap", total, w, o)
				}
			}
		}
	}
}

// Every seed must give the minimum faults: the chaos tests take their seed
// from the clock.
func TestScheduleMinimumsForAnySeed(t *testing.T) {
	p := defaultParams(defaultChaos, 2)
	for seed := range uint64(2000) {
		n := countKinds(NewSchedule(seed, p))
		if n[EvRestart] != p.MinRestarts || n[EvOutage] < p.MinOutages || n[EvBlackholeStart] < p.MinBlackholes ||
			n[EvCut] < 5 || n[EvKill] < 2*p.MinKills {
			t.Fatalf("seed %d: %v", seed, n)
		}
	}
}

func TestRanges(t *testing.T) {
	got := ranges([]uint64{9, 3, 4, 5, 7, 4, 10})
	if want := [][2]uint64{{3, 5}, {7, 7}, {9, 10}}; !reflect.DeepEqual(got, want) {
		t.Errorf("ranges = %v, want %v", got, want)
	}
}

func TestAnalyseFindsEveryKindOfFault(t *testing.T) {
	seqs := func(from, to uint64) []uint64 {
		var s []uint64
		for n := from; n <= to; n++ {
			s = append(s, n)
		}
		return s
	}
	runs := []Run{
		{Index: 0, Start: 1, Accepted: seqs(1, 5), End: endKilled},   // may have published 6 unprinted
		{Index: 1, Start: 6, Accepted: seqs(6, 8), End: endKilled},   // may have published 9 unprinted
		{Index: 2, Start: 9, Accepted: seqs(9, 12), End: endDrained}, // final
	}
	var arrivals []Arrival
	for _, n := range []uint64{1, 2, 3, 5, 4, 6, 6, 7, 9, 9, 9, 11, 13} {
		arrivals = append(arrivals, Arrival{Seq: n})
	}
	got := analyse("q2", "t", 2, runs, arrivals)
	want := LaneResult{
		Lane: "q2", Topic: "t", QoS: 2, Runs: 3, Kills: 2,
		Accepted: 12, Received: 13, Delivered: 9,
		Lost: 3, LostSeqs: []uint64{8, 10, 12},
		Reordered: 1, ReorderedExamples: []string{"4 after 5"},
		Duplicates: 3, DuplicateSeqs: []uint64{6, 9, 9},
		AllowedDuplicates: 2, UnexpectedDuplicates: 1, UnexpectedDupSeqs: []uint64{9},
		Unaccepted: 1, UnacceptedSeqs: []uint64{13},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("analyse:\n got %+v\nwant %+v", got, want)
	}

	// A run that does not continue after the previous one is the harness's fault.
	bad := []Run{
		{Index: 0, Start: 1, Accepted: seqs(1, 3), End: endKilled},
		{Index: 1, Start: 5, Accepted: []uint64{5, 7}, End: endDrained},
	}
	if got := analyse("q1", "t", 1, bad, nil); len(got.HarnessErrors) != 2 || got.Lost != 4 {
		t.Errorf("harness errors %q, lost %d; want 2 errors and 4 lost", got.HarnessErrors, got.Lost)
	}
	// An exit before the final run is unexpected.
	exited := []Run{{Index: 0, Start: 1, Accepted: seqs(1, 2), End: endExited}, {Index: 1, Start: 3, End: endDrained}}
	if got := analyse("q1", "t", 1, exited, nil); got.UnexpectedExits != 1 {
		t.Errorf("unexpected exits %d, want 1", got.UnexpectedExits)
	}
}

func TestRepublishedCountsRepeatedKills(t *testing.T) {
	runs := []Run{
		{Index: 0, Start: 1, Accepted: []uint64{1, 2}, End: endKilled},
		{Index: 1, Start: 3, End: endKilled}, // killed before printing 3, twice
		{Index: 2, Start: 3, End: endKilled},
		{Index: 3, Start: 3, Accepted: []uint64{3}, End: endDrained},
	}
	if got, want := republished(runs), map[uint64]int{3: 3}; !reflect.DeepEqual(got, want) {
		t.Errorf("republished = %v, want %v", got, want)
	}
	if got := publishedBy(runs, 3); !slices.Equal(got, []int{0, 1, 2, 3}) {
		t.Errorf("publishedBy(3) = %v", got)
	}
}

func TestDedupStore(t *testing.T) {
	s := newDedupStore()
	s.Open()
	defer s.Close()
	publish := func(id uint16, qos byte, dup bool) {
		p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
		p.MessageID, p.Qos, p.Dup = id, qos, dup
		s.Put(inboundKey(id), p)
	}
	pubrel := func(id uint16) {
		p := packets.NewControlPacket(packets.Pubrel).(*packets.PubrelPacket)
		p.MessageID = id
		s.Put(inboundKey(id), p)
	}
	payload := "p"
	dupFlag := false
	expect := func(step string, id uint16, want bool) {
		t.Helper()
		if got := s.firstDelivery(id, dupFlag, []byte(payload)); got != want {
			t.Errorf("%s: firstDelivery(%d) = %t, want %t", step, id, got, want)
		}
	}

	publish(1, 2, false)
	expect("new message", 1, true)
	publish(1, 2, true) // redelivered before PUBREL (PUBREC lost)
	expect("redelivery", 1, false)
	pubrel(1)
	publish(1, 2, true) // identifier reused; the first copy we see carries DUP
	payload, dupFlag = "p2", true
	expect("reused id, first copy with DUP", 1, true)
	dupFlag = false
	publish(1, 2, false) // a new message without PUBREL in between: the broker restarted the exchange
	expect("new message without DUP", 1, true)
	expect("handler called twice for one copy", 1, false)

	// A duplicate that is a second message (a new PUBLISH exchange) is not hidden.
	publish(2, 2, false)
	expect("message", 2, true)
	pubrel(2)
	publish(2, 2, false)
	expect("second message with the same payload", 2, true)

	// The broker's resend after its restart: PUBREL already seen, the same
	// message again with DUP and the same payload. Not a new message.
	pubrel(2)
	publish(2, 2, true)
	dupFlag = true
	expect("broker resend after PUBREL", 2, false)
	payload = "other"
	expect("a different message under the identifier", 2, true)

	// The store still stores.
	if s.Get(inboundKey(2)) == nil {
		t.Errorf("the wrapped store lost the packet")
	}
}

func inboundKey(id uint16) string { return "i." + strconv.Itoa(int(id)) }

func TestParseSeq(t *testing.T) {
	for in, want := range map[string]uint64{"1 x": 1, "123456 xxxx": 123456, "7 ": 7} {
		if got, err := parseSeq([]byte(in)); err != nil || got != want {
			t.Errorf("parseSeq(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", " 1", "12", "a b"} {
		if _, err := parseSeq([]byte(in)); err == nil {
			t.Errorf("parseSeq(%q): no error", in)
		}
	}
}

func TestLateQoS2Resends(t *testing.T) {
	log := strings.Join([]string{
		"T: mosquitto version 2.0.11 starting",
		"T: Received PUBLISH from c (d0, q2, r0, m7, 't', ... (64 bytes))",
		"T: Sending PUBREC to c (m7, rc0)",
		"T: Received PUBLISH from c (d1, q2, r0, m7, 't', ... (64 bytes))", // PUBREC lost: fine
		"T: Received PUBREL from c (Mid: 7)",
		"T: Sending PUBCOMP to c (m7)",
		"T: Received PUBLISH from c (d1, q1, r0, m8, 't', ... (64 bytes))",
		"T: Received PUBLISH from c (d1, q2, r0, m7, 't', ... (64 bytes))", // late: a new message
		"T: Sending PUBCOMP to other (m9)",
		"T: Received PUBLISH from c (d1, q2, r0, m9, 't', ... (64 bytes))", // another client's 9
		"T: Received PUBLISH from c (d0, q2, r0, m17, 't', ... (64 bytes))",
		"T: Sending PUBCOMP to c (m17)",
		"T: New client connected from 127.0.0.1:1 as c (p2, c0, k2).",
		"T: Received PUBLISH from c (d1, q2, r0, m17, 't', ... (64 bytes))", // a new connection: ambiguous
	}, "\n")
	got := lateQoS2Resends(log, "c")
	if len(got) != 1 || got[0].Line != 8 {
		t.Fatalf("lateQoS2Resends = %+v, want line 8 only", got)
	}
	if d := describeLateResends(log, "c", got); !strings.Contains(d, "line 8") || !strings.Contains(d, "6: T: Sending PUBCOMP to c (m7)") {
		t.Errorf("description:\n%s", d)
	}
}
