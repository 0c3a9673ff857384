package embedbroker

import (
	"bytes"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// deliverFirst makes mochi deliver an inbound QoS 1 or 2 message to its
// subscribers before it writes the acknowledgement, rather than after.
//
// mochi v2.7.9 records a QoS 1/2 PUBLISH as received (a PUBACK or PUBREC
// entry in the client's in-flight state, in memory and in storage), then
// writes the acknowledgement, then delivers; when that write fails (the
// connection was cut, or closed by a takeover or a shutdown) it returns
// before delivering, and keeps the entry. When the client reconnects, mochi
// resends the entries it holds: the PUBACK or PUBREC of a message it never
// delivered, which the publisher takes as the broker's acknowledgement. A
// QoS 2 resend with DUP is answered from the entry and not delivered
// either. Either way the message is lost while the publisher is told it
// arrived. Delivering first, through an inline client, and telling mochi to
// ignore the packet otherwise (it still records the entry and answers),
// closes that gap: a QoS 2 resend is still answered from the entry and not
// delivered again; a QoS 1 resend may be delivered again, as QoS 1 allows.
type deliverFirst struct {
	mqtt.HookBase
	srv    *mqtt.Server
	inline *mqtt.Client // delivers; its packets are not touched by this hook
}

func newDeliverFirst(srv *mqtt.Server) *deliverFirst {
	return &deliverFirst{srv: srv, inline: srv.NewClient(nil, "local", "embedbroker-deliver", true)}
}

// ID names the hook.
func (h *deliverFirst) ID() string { return "deliver-first" }

// Provides reports the one event the hook handles.
func (h *deliverFirst) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPublish}, []byte{b})
}

// OnPublish delivers a client's QoS 1 or 2 message and has mochi ignore it
// otherwise (packets.CodeSuccessIgnore: recorded and acknowledged, not
// delivered or retained again). mochi does not call it for a QoS 2 resend
// it has recorded: that is answered before the hooks run.
func (h *deliverFirst) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || pk.FixedHeader.Qos == 0 {
		return pk, nil
	}
	out := pk.Copy(false)
	out.PacketID = pk.PacketID // for the validity check; an inline client's identifiers are not used
	if err := h.srv.InjectPacket(h.inline, out); err != nil {
		return pk, err
	}
	return pk, packets.CodeSuccessIgnore
}
