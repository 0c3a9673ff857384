package e2e

import (
	"fmt"
	"strings"
)

// LateResend is a QoS 2 PUBLISH with DUP set that the broker received on
// the same connection on which it had already completed an exchange for that
// packet identifier (it had sent PUBCOMP, so it had received PUBREL, so the
// client had had the PUBREC). A client keeping exactly-once never sends it:
// in MQTT 3.1.1 a client resends only after reconnecting, and a new message
// reusing the identifier would go without DUP. The broker takes it for a new
// message, and every subscriber receives a duplicate.
//
// A DUP PUBLISH on a later connection is ambiguous in the log (it may be the
// first copy the broker sees of a new message whose first attempt was cut),
// so it is not reported.
type LateResend struct {
	Line int    // line number in the broker's log, from 1
	Text string // the log line
}

// lateQoS2Resends scans a Mosquitto log (log_type all) for the late QoS 2
// resends of client.
func lateQoS2Resends(log, client string) []LateResend {
	recv := "Received PUBLISH from " + client + " ("
	comp := "Sending PUBCOMP to " + client + " (m"
	conn := " as " + client + " ("
	done := map[string]bool{} // packet identifier -> exchange completed on this connection
	var out []LateResend
	for i, line := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(line, recv):
			// "... Received PUBLISH from c (d1, q2, r0, m2591, 'topic', ... (64 bytes))"
			fields := strings.Split(line[strings.Index(line, recv)+len(recv):], ", ")
			if len(fields) < 4 || fields[1] != "q2" {
				continue
			}
			id := fields[3]
			if fields[0] == "d1" && done[id] {
				out = append(out, LateResend{Line: i + 1, Text: line})
			}
			done[id] = false
		case strings.Contains(line, comp):
			// "... Sending PUBCOMP to c (m2591)"
			rest := line[strings.Index(line, comp)+len(comp)-1:]
			done[strings.TrimSuffix(rest, ")")] = true
		case strings.Contains(line, "New client connected") && strings.Contains(line, conn),
			strings.Contains(line, "mosquitto version") && strings.Contains(line, "starting"):
			clear(done) // a new connection of the client, or a new broker process
		}
	}
	return out
}

// describeLateResends summarises findings, with a few lines of context from
// the log around the first ones.
func describeLateResends(log, client string, found []LateResend) string {
	if len(found) == 0 {
		return ""
	}
	lines := strings.Split(log, "\n")
	var b strings.Builder
	fmt.Fprintf(&b, "broker log: %d QoS 2 PUBLISH with DUP from %s for a packet identifier whose exchange had completed on the same connection (PUBCOMP sent): the broker took each for a new message", len(found), client)
	for _, f := range found[:min(len(found), 3)] {
		fmt.Fprintf(&b, "\n  line %d: %s", f.Line, f.Text)
		id := ""
		if i := strings.Index(f.Text, ", m"); i >= 0 {
			id = f.Text[i+2:]
			id = id[:strings.Index(id, ",")]
		}
		// The lines of this client about this identifier, up to 60 lines before.
		num := strings.TrimPrefix(id, "m")
		for j := max(0, f.Line-60); j < f.Line-1; j++ {
			l := lines[j]
			if !strings.Contains(l, client) {
				continue
			}
			if strings.Contains(l, id+",") || strings.Contains(l, id+")") || strings.Contains(l, "Mid: "+num+")") ||
				strings.Contains(l, "Mid: "+num+",") || strings.Contains(l, "connected") || strings.Contains(l, "closed") {
				fmt.Fprintf(&b, "\n    %d: %s", j+1, l)
			}
		}
	}
	return b.String()
}
