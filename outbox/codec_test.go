package outbox

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func sameRecord(a, b *Record) bool {
	return a.Topic == b.Topic && a.QoS == b.QoS && a.Retained == b.Retained && bytes.Equal(a.Payload, b.Payload) &&
		a.Enqueued.Equal(b.Enqueued) && a.Expires.Equal(b.Expires)
}

func TestCodecRoundTrip(t *testing.T) {
	for _, r := range []Record{
		{Enqueued: time.Unix(0, 1)},
		{Topic: "a/b/c", QoS: 2, Retained: true, Payload: []byte("x"), Enqueued: time.Unix(1700000000, 5), Expires: time.Unix(1700000060, 7)},
		{Topic: string(make([]byte, maxTopicLen)), Payload: make([]byte, 1<<16), Enqueued: maxTime},
		{Topic: "t", QoS: 1, Enqueued: minTime, Expires: minTime},
	} {
		if err := checkRecord(&r); err != nil {
			t.Fatal(err)
		}
		enc := appendRecord([]byte("prefix"), &r)[len("prefix"):]
		if len(enc) != encodedSize(&r) {
			t.Fatalf("encodedSize %d, encoded %d", encodedSize(&r), len(enc))
		}
		var got Record
		if err := decodeRecord(enc, &got); err != nil {
			t.Fatal(err)
		}
		if !sameRecord(&r, &got) {
			t.Fatalf("round trip: %+v -> %+v", r, got)
		}
		enc[len(enc)-crcLen-1] ^= 1 // any flipped bit is caught
		if err := decodeRecord(enc, &got); !errors.Is(err, errChecksum) {
			t.Fatalf("flipped bit: %v", err)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good := appendRecord(nil, &Record{Topic: "t", Payload: []byte("p"), Enqueued: time.Unix(1, 0), Expires: time.Unix(2, 0)})
	reseal := func(b []byte) []byte { // fix the checksum after tampering
		b = append([]byte(nil), b[:len(b)-crcLen]...)
		return appendCRC(b)
	}
	for name, b := range map[string][]byte{
		"empty":     nil,
		"short":     good[:10],
		"version":   reseal(append([]byte{2}, good[1:]...)),
		"flags":     reseal(append([]byte{1, 0x80}, good[2:]...)),
		"qos":       reseal(append([]byte{1, good[1], 3}, good[3:]...)),
		"topic len": reseal(append(append([]byte(nil), good[:19]...), 0xff, 0xff, 0x03)),
		"truncated": reseal(good[:len(good)-crcLen-3]),
		"checksum":  append(append([]byte(nil), good[:len(good)-1]...), good[len(good)-1]^1),
	} {
		var r Record
		if err := decodeRecord(b, &r); err == nil {
			t.Errorf("%s: decoded %+v", name, r)
		}
	}
	if _, _, err := decodeState([]byte{1, 9, 0, 0, 0, 0, 0, 0}); err == nil {
		t.Error("bad state decoded")
	}
	pid, ph, err := decodeState(encodeState(513, PhaseReleased))
	if err != nil || pid != 513 || ph != PhaseReleased {
		t.Fatalf("state round trip %d %v %v", pid, ph, err)
	}
}

func TestCheckRecordRejectsOutOfRangeTimes(t *testing.T) {
	r := Record{Enqueued: time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := checkRecord(&r); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("year 1500: %v", err)
	}
}

// FuzzDecodeRecord: decoding arbitrary bytes never panics, and whatever
// decodes re-encodes to something that decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, &Record{Topic: "a/b", QoS: 1, Payload: []byte("hello"), Enqueued: time.Unix(1700000000, 0)}))
	f.Add(appendRecord(nil, &Record{Retained: true, QoS: 2, Enqueued: time.Unix(1, 2), Expires: time.Unix(3, 4)}))
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if err := decodeRecord(b, &r); err != nil {
			return
		}
		if err := checkRecord(&r); err != nil {
			t.Fatalf("decoded an invalid record: %v", err)
		}
		enc := appendRecord(nil, &r)
		var r2 Record
		if err := decodeRecord(enc, &r2); err != nil || !sameRecord(&r, &r2) {
			t.Fatalf("re-encode: %v %+v %+v", err, r, r2)
		}
		if len(enc) != encodedSize(&r) {
			t.Fatalf("encodedSize %d, encoded %d", encodedSize(&r), len(enc))
		}
	})
}

// FuzzRecordRoundTrip: every valid record survives encode and decode.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add("a/b", byte(1), true, []byte("payload"), int64(1700000000000000000), int64(0))
	f.Add("", byte(0), false, []byte{}, int64(-1), int64(1))
	f.Fuzz(func(t *testing.T, topic string, qos byte, retained bool, payload []byte, enq, exp int64) {
		r := Record{Topic: topic, QoS: qos % 3, Retained: retained, Payload: payload, Enqueued: time.Unix(0, enq)}
		if exp != 0 {
			r.Expires = time.Unix(0, exp)
		}
		if checkRecord(&r) != nil {
			return
		}
		var got Record
		if err := decodeRecord(appendRecord(nil, &r), &got); err != nil || !sameRecord(&r, &got) {
			t.Fatalf("round trip: %v %+v %+v", err, r, got)
		}
	})
}

// FuzzDecodeState: state values never panic the decoder.
func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState(1, PhaseSent))
	f.Fuzz(func(t *testing.T, b []byte) {
		pid, ph, err := decodeState(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeState(pid, ph), b) {
			t.Fatalf("state %x decoded to %d %v", b, pid, ph)
		}
	})
}
