// Package client is Holdfast's MQTT client: paho.mqtt.golang under a
// supervisor, with every QoS 1 and QoS 2 publish written to a durable outbox
// before Publish returns and removed only when the broker acknowledged it.
//
//	c, err := client.New(client.Config{
//		Brokers:   []string{"tcp://127.0.0.1:1883"},
//		ClientID:  "sensor-42",
//		OutboxDir: "/var/lib/sensor/outbox",
//	})
//	...
//	r, err := c.Publish(ctx, "site/1/temp", payload, client.QoS1)
//	...
//	err = c.Flush(ctx) // everything accepted is acknowledged: safe to power off
//	err = c.Close(ctx)
//
// # Guarantees
//
// With a durable outbox (Config.OutboxDir), for messages Publish accepted
// (returned nil):
//
//   - At least once: each QoS 1/2 message reaches the broker, whatever
//     happens to the link, to the broker (a graceful restart) or to this
//     process (a crash, then a restart on the same outbox directory).
//   - Order: the broker receives the first copy of each message in the
//     order Publish accepted them. Resends may repeat a message; they never
//     let a later message overtake an earlier one's first delivery.
//   - Exactly once for QoS 2, on a broker that keeps the session: a resend
//     keeps the message's packet identifier, and a message whose PUBREC
//     arrived is resumed with its PUBREL, never with a new PUBLISH.
//   - The in-flight window, resends included, stays within
//     Config.MaxInflightQoS2 (the broker's receive quota for QoS 2).
//   - A bounded outbox applies its overflow policy visibly: an error to the
//     caller, or a drop that is counted (Stats) and reported (Hooks.OnDrop).
//   - Inbound: a QoS 1/2 message is acknowledged only when its handling
//     ended: every handler whose filter matches it accepted it, or, refused
//     after Config.HandlerRetries, it went to Config.DeadLetter. A message
//     no subscription matches goes to Config.DefaultHandler, or is
//     acknowledged and counted (Stats.Unrouted): none is left
//     unacknowledged to hold the broker's window.
//   - Inbound QoS 2 reaches the handlers once, across reconnects and
//     restarts: the identifiers handled and not yet released are written to
//     a small file next to the outbox before the PUBREC leaves.
//   - Subscribe and Unsubscribe are kept until the broker acknowledged
//     them: made offline they are sent on the next connection, and a
//     failed one is sent again.
//
// # Caveats
//
//   - Outside the promise: loss of the outbox directory itself, a broker
//     that crashes before persisting what it acknowledged, and QoS 0.
//   - QoS 0 messages are sent directly and may interleave with queued QoS
//     1/2 messages; with QoS0Queue they take their place in the outbox.
//   - Ordering across QoS levels of one client holds for live sends (a QoS
//     0/1 message waits for the PUBREL of every earlier QoS 2 message);
//     within one QoS level it holds across reconnects and restarts too.
//   - Inbound QoS 2: a crash after a handler returned and before its
//     message's identifier was written (one fsync) hands that message to
//     the handler again. With an in-memory outbox, or Config.Outbox, the
//     identifiers live in memory and last the process.
//   - Shared subscriptions ($share/<group>/<filter>): MQTT 3.1.1 does not
//     say which subscription a message came for, so it is routed by the
//     inner filter to every route that matches.
//   - With an in-memory outbox (no OutboxDir) nothing survives the process.
package client
