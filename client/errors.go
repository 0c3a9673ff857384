package client

import "errors"

// Sentinel errors returned by the client. Test for them with errors.Is; the
// returned errors wrap them with the detail of the failing call.
var (
	// ErrInvalidConfig is returned by New when the Config cannot work (no
	// broker, a durable outbox without a stable ClientID, a bad URL, ...).
	// Fix the configuration; nothing was started.
	ErrInvalidConfig = errors.New("holdfast: invalid config")

	// ErrClosed is returned by calls made after Close started. Nothing was
	// accepted by the call.
	ErrClosed = errors.New("holdfast: client closed")

	// ErrInvalidTopic is returned by Publish for a topic that MQTT cannot
	// carry: empty, not valid UTF-8, containing U+0000, containing the
	// wildcards '+' or '#', or longer than 65,535 bytes. The message was not
	// accepted and the outbox is unchanged.
	ErrInvalidTopic = errors.New("holdfast: invalid topic")

	// ErrInvalidQoS is returned for a QoS outside 0..2. Nothing was accepted.
	ErrInvalidQoS = errors.New("holdfast: invalid QoS")

	// ErrPayloadTooLarge is returned by Publish for a payload that cannot fit
	// in one MQTT packet (268,435,455 bytes less the topic and header) or is
	// over Config.MaxPayload. Nothing was accepted.
	ErrPayloadTooLarge = errors.New("holdfast: payload too large")

	// ErrInvalidFilter is returned by Subscribe for a malformed topic
	// filter. Nothing was subscribed.
	ErrInvalidFilter = errors.New("holdfast: invalid topic filter")

	// ErrNotConnected is returned by a QoS 0 Publish while no connection is
	// up and Config.QoS0 is QoS0Reject (the default): a QoS 0 message is
	// never reported sent when it was not. Retry later, or publish at QoS 1.
	ErrNotConnected = errors.New("holdfast: not connected")

	// ErrOutboxFull is returned by Publish when the outbox is at one of its
	// limits and the overflow policy is to reject. The message was not
	// accepted; earlier messages are untouched. Retry after the backlog
	// drains (see Flush and Stats).
	ErrOutboxFull = errors.New("holdfast: outbox full")

	// ErrDropped is the error of a Receipt whose message was removed from
	// the outbox unsent, by the drop-oldest overflow policy or by its expiry.
	// It is always also reported through Hooks.OnDrop and counted in Stats.
	ErrDropped = errors.New("holdfast: message dropped before delivery")

	// ErrNotDrained is returned by Close when its context ended before the
	// outbox was empty. With a durable outbox the remaining messages stay on
	// disk and are sent after the next start with the same directory; with
	// an in-memory outbox they are lost.
	ErrNotDrained = errors.New("holdfast: outbox not drained at close")

	// ErrStopped is returned by calls that wait for a connection when the
	// supervisor stopped for good after a permanent refusal (bad credentials,
	// not authorised, identifier rejected). errors.Is also matches the
	// broker's refusal. Fix the configuration and start a new client.
	ErrStopped = errors.New("holdfast: connection supervisor stopped")

	// ErrSubscriptionRefused is returned by Subscribe (and is the error of
	// an adapter's subscribe token) when the broker refused the filter: its
	// SUBACK carried the failure code 0x80 (not authorised, a filter it does
	// not support, ...). The subscription and its handler were removed;
	// retrying the same filter gets the same answer until the broker's
	// configuration changes.
	ErrSubscriptionRefused = errors.New("holdfast: subscription refused by the broker")
)
