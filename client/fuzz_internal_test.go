package client

import (
	"bytes"
	"slices"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Fuzz targets for the code that parses MQTT packet bytes: publishID (the
// identifier of an outbound PUBLISH, as paho wrote it) and pubrecScanner
// (the PUBREC identifiers in the inbound stream, read from the network
// before paho sees it). paho's own encoder and decoder are the reference:
// on every packet paho would write or accept, the parsers must agree with
// it, and on any bytes at all they must not panic.
//
//	go test -run '^$' -fuzz '^FuzzPublishID$' -fuzztime 30s ./client/

// encode returns the bytes paho writes for cp.
func encode(t testing.TB, cp packets.ControlPacket) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := cp.Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func publishPacket(qos byte, dup, retain bool, topic string, id uint16, payload []byte) *packets.PublishPacket {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.Qos, p.Dup, p.Retain = qos, dup, retain
	p.TopicName, p.MessageID, p.Payload = topic, id, payload
	return p
}

// ackPacket returns a PUBACK, PUBREC, PUBREL, PUBCOMP or UNSUBACK for id.
func ackPacket(kind byte, id uint16) packets.ControlPacket {
	cp := packets.NewControlPacket(kind)
	switch p := cp.(type) {
	case *packets.PubackPacket:
		p.MessageID = id
	case *packets.PubrecPacket:
		p.MessageID = id
	case *packets.PubrelPacket:
		p.MessageID = id
	case *packets.PubcompPacket:
		p.MessageID = id
	case *packets.UnsubackPacket:
		p.MessageID = id
	}
	return cp
}

// payloadSizes cross the boundaries of the remaining length's encoding
// (1, 2 and 3 bytes).
var payloadSizes = []int{0, 1, 100, 121, 122, 127, 128, 16_000, 16_378, 16_383, 16_384, 65_535}

// declaredLength decodes a fixed header's remaining length as paho does (at
// most 4 bytes; a fourth continuation bit is ignored) and returns it with
// the header's size. ok is false when b ends inside the header.
func declaredLength(b []byte) (n, header int, ok bool) {
	mult := 0
	for i := 1; i < len(b) && i <= 4; i++ {
		n |= int(b[i]&0x7f) << mult
		if b[i]&0x80 == 0 || i == 4 {
			return n, i + 1, true
		}
		mult += 7
	}
	return 0, 0, false
}

// pahoPackets decodes b with paho's reader, packet by packet, and stops at
// the first packet paho refuses, one that b holds only in part, or one that
// paho would not write as it was read (a non-canonical encoding: paho
// accepts, for example, a 1-byte PUBREC body). It returns the packets and
// the bytes each took.
func pahoPackets(b []byte) (cps []packets.ControlPacket, raw [][]byte) {
	for len(b) > 0 {
		n, h, ok := declaredLength(b)
		if !ok || n > len(b)-h {
			return // paho would fail on the missing bytes (after allocating n)
		}
		r := bytes.NewReader(b[:h+n])
		cp, err := packets.ReadPacket(r)
		if err != nil || r.Len() != 0 {
			return
		}
		var again bytes.Buffer
		if cp.Write(&again) != nil || !bytes.Equal(again.Bytes(), b[:h+n]) {
			return
		}
		cps, raw = append(cps, cp), append(raw, b[:h+n])
		b = b[h+n:]
	}
	return
}

// pahoPubrecs returns the identifiers of the PUBRECs among cps.
func pahoPubrecs(cps []packets.ControlPacket) []uint16 {
	var ids []uint16
	for _, cp := range cps {
		if p, ok := cp.(*packets.PubrecPacket); ok {
			ids = append(ids, p.MessageID)
		}
	}
	return ids
}

// FuzzPublishID checks publishID on the bytes of any PUBLISH paho encodes:
// it finds paho's packet identifier in the whole packet, and in a prefix of
// it exactly when the prefix holds the identifier (never a wrong one).
func FuzzPublishID(f *testing.F) {
	for _, size := range payloadSizes {
		f.Add("holdfast/telemetry", uint16(1), byte(1), false, false, uint16(size))
	}
	f.Add("", uint16(0), byte(2), true, true, uint16(0))
	f.Add("a/b", uint16(65535), byte(2), true, false, uint16(130))
	f.Add(string(bytes.Repeat([]byte{0xff}, 300)), uint16(0x8000), byte(1), false, true, uint16(16_380))

	// A remaining length of 4 bytes needs a payload of 2 MiB: checked once
	// here rather than in every fuzz iteration.
	big := encode(f, publishPacket(1, false, false, "t", 4242, make([]byte, 2<<20)))
	if _, h, _ := declaredLength(big); h != 5 {
		f.Fatalf("header of %d bytes, want 5", h)
	}
	if id, ok := publishID(big); !ok || id != 4242 {
		f.Fatalf("publishID of a 2 MiB PUBLISH = %d, %v; want 4242", id, ok)
	}

	f.Fuzz(func(t *testing.T, topic string, id uint16, qos byte, dup, retain bool, size uint16) {
		if len(topic) > 65535 {
			return // paho cannot encode it
		}
		qos = 1 + qos%2
		b := encode(t, publishPacket(qos, dup, retain, topic, id, make([]byte, size)))
		_, h, _ := declaredLength(b)
		idEnd := h + 2 + len(topic) + 2
		for k := 0; k <= len(b); k++ {
			got, ok := publishID(b[:k])
			if k < idEnd && ok {
				t.Fatalf("publishID of the first %d bytes (identifier ends at %d) = %d, true", k, idEnd, got)
			}
			if k >= idEnd && (!ok || got != id) {
				t.Fatalf("publishID of the first %d bytes = %d, %v; want %d (packet % x...)", k, got, ok, id, b[:min(len(b), idEnd)])
			}
		}
	})
}

// FuzzPublishIDBytes feeds publishID arbitrary bytes: it must not panic,
// and whenever the bytes are one QoS 1/2 PUBLISH as paho writes it, it must
// return the identifier paho's decoder reads.
func FuzzPublishIDBytes(f *testing.F) {
	for _, size := range payloadSizes {
		if size > 16_384 {
			continue // large inputs slow every mutation; 16,384 already takes 3 length bytes
		}
		f.Add(encode(f, publishPacket(byte(1+size%2), size%3 == 0, false, "holdfast/telemetry", uint16(size), make([]byte, size))))
	}
	f.Add(encode(f, publishPacket(0, false, false, "qos0", 0, []byte("x"))))
	f.Add(encode(f, ackPacket(packets.Pubrel, 7)))
	f.Add([]byte{0x32, 0xff, 0xff, 0xff, 0xff, 0x00, 0x01, 't', 0x00, 0x01})
	f.Add([]byte{0x32})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := publishID(b) // must not panic
		cps, _ := pahoPackets(b)
		if len(cps) != 1 {
			return
		}
		p, isPub := cps[0].(*packets.PublishPacket)
		if !isPub || p.Qos == 0 {
			return
		}
		if !ok || got != p.MessageID {
			t.Fatalf("publishID = %d, %v; paho reads identifier %d (packet % x)", got, ok, p.MessageID, b[:min(len(b), 32)])
		}
	})
}

// scanChunks runs a new scanner over b cut into chunks whose sizes cycle
// through sizes (each 1..256), and returns the identifiers it found.
func scanChunks(b []byte, sizes []byte) []uint16 {
	ids, _ := scanAll(b, sizes)
	return ids
}

// scanAll is scanChunks returning the acknowledgements noted as well.
func scanAll(b []byte, sizes []byte) ([]uint16, []ackRead) {
	var s pubrecScanner
	var ids []uint16
	for i, k := 0, 0; i < len(b); k++ {
		n := len(b) - i
		if len(sizes) > 0 {
			n = min(n, int(sizes[k%len(sizes)])+1)
		}
		ids = s.scan(b[i:i+n], ids)
		i += n
	}
	return ids, s.acks
}

// checkScanner asserts the scanner's properties on one stream: the same
// identifiers however the stream is split, and, for the packets paho
// decodes before it would stop, exactly paho's PUBREC identifiers, in order.
func checkScanner(t *testing.T, stream, sizes []byte) {
	t.Helper()
	whole := scanChunks(stream, nil)
	if split := scanChunks(stream, sizes); !slices.Equal(split, whole) {
		t.Fatalf("split %v: %v, unsplit: %v", sizes, split, whole)
	}
	if bytewise := scanChunks(stream, []byte{0}); !slices.Equal(bytewise, whole) {
		t.Fatalf("byte by byte: %v, unsplit: %v", bytewise, whole)
	}
	cps, _ := pahoPackets(stream)
	want := pahoPubrecs(cps)
	if len(whole) < len(want) || !slices.Equal(whole[:len(want)], want) {
		t.Fatalf("scanner found %v; paho decodes PUBRECs %v from the first %d packets", whole, want, len(cps))
	}
}

// inboundSeed is a stream a broker could send: every packet type a client
// reads, PUBRECs among them, and PUBLISH payloads that contain bytes shaped
// like a PUBREC (which must not be taken for one).
func inboundSeed(t testing.TB) []byte {
	connack := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
	connack.SessionPresent = true
	suback := packets.NewControlPacket(packets.Suback).(*packets.SubackPacket)
	suback.MessageID, suback.ReturnCodes = 3, []byte{0, 1, 2, 0x80}
	fake := []byte{0x50, 0x02, 0xde, 0xad, 0x50, 0x02}
	var s []byte
	for _, cp := range []packets.ControlPacket{
		connack, suback,
		ackPacket(packets.Pubrec, 1),
		ackPacket(packets.Puback, 2),
		publishPacket(2, false, false, "in/q2", 9, bytes.Repeat(fake, 40)),
		ackPacket(packets.Pubrec, 0x5002),
		publishPacket(1, true, true, "in/q1", 10, bytes.Repeat(fake, 3000)),
		ackPacket(packets.Pubcomp, 1),
		ackPacket(packets.Pubrel, 9),
		ackPacket(packets.Unsuback, 4),
		packets.NewControlPacket(packets.Pingresp),
		publishPacket(0, false, false, "in/q0", 0, fake),
		ackPacket(packets.Pubrec, 65535),
		ackPacket(packets.Pubrec, 0),
	} {
		s = append(s, encode(t, cp)...)
	}
	return s
}

// FuzzPubrecScanner feeds the scanner arbitrary byte streams, split at
// arbitrary points (see checkScanner).
func FuzzPubrecScanner(f *testing.F) {
	seed := inboundSeed(f)
	for _, sizes := range [][]byte{nil, {0}, {1, 2}, {6}, {255, 3}} {
		f.Add(seed, sizes)
	}
	f.Add(encode(f, ackPacket(packets.Pubrec, 42)), []byte{0})
	f.Add([]byte{0x50, 0x01, 0x07, 0x50, 0x02, 0x00, 0x08}, []byte{}) // a 1-byte PUBREC body, then a good one
	f.Add([]byte{0x50, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x02, 0x00, 0x01}, []byte{0})
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f}, []byte{1})

	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		checkScanner(t, stream, sizes)
	})
}

// FuzzPubrecScannerPackets builds streams of well-formed packets as a broker
// sends them (a kind and an identifier per packet, from the fuzzer's bytes)
// and checks that the scanner finds exactly their PUBRECs, however split.
func FuzzPubrecScannerPackets(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1, 2, 3, 4, 0, 5, 6, 7, 8}, []byte{0})
	f.Add([]byte{1, 0xff, 0xff, 9, 0x40, 0, 1, 0x50, 2}, []byte{2, 250})
	f.Add([]byte{8, 1, 2, 8, 3, 4, 1, 5, 6}, []byte{})

	kinds := []byte{packets.Pubrec, packets.Puback, packets.Pubrel, packets.Pubcomp, packets.Unsuback, packets.Pingresp}
	f.Fuzz(func(t *testing.T, spec, sizes []byte) {
		var stream []byte
		var want []uint16
		var wantAcks []ackRead
		for i := 0; i+2 < len(spec); i += 3 {
			kind, id := spec[i], uint16(spec[i+1])<<8|uint16(spec[i+2])
			var cp packets.ControlPacket
			switch k := int(kind) % (len(kinds) + 2); {
			case k < len(kinds):
				cp = ackPacket(kinds[k], id)
				switch kinds[k] {
				case packets.Pubrec:
					want = append(want, id)
				case packets.Puback, packets.Pubcomp, packets.Unsuback:
					wantAcks = append(wantAcks, ackRead{kinds[k], id})
				}
			default: // a PUBLISH whose payload size crosses length encodings
				size := payloadSizes[int(id)%len(payloadSizes)]
				cp = publishPacket(kind%3, kind&8 != 0, false, "in/t", id, bytes.Repeat([]byte{0x50, 0x02}, size/2))
			}
			stream = append(stream, encode(t, cp)...)
		}
		got, acks := scanAll(stream, sizes)
		if !slices.Equal(got, want) {
			t.Fatalf("scanner found %v, want %v (split %v)", got, want, sizes)
		}
		if !slices.Equal(acks, wantAcks) {
			t.Fatalf("scanner noted acknowledgements %v, want %v (split %v)", acks, wantAcks, sizes)
		}
		checkScanner(t, stream, sizes)
	})
}
