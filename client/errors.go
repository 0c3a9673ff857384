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
	// supervisor stopped for good after a permanent refusal: bad
	// credentials, not authorised, identifier rejected, a broker certificate
	// that cannot be trusted, a refused client certificate. errors.Is also
	// matches the refusal's typed error (ErrBadCredentials, ErrNotAuthorized,
	// ErrTLSUnknownAuthority, ...) and paho's. Fix the cause, then call
	// RetryNow (or start a new client).
	ErrStopped = errors.New("holdfast: connection supervisor stopped")

	// ErrSubscriptionRefused is returned by Subscribe (and is the error of
	// an adapter's subscribe token) when the broker refused the filter: its
	// SUBACK carried the failure code 0x80 (not authorised, a filter it does
	// not support, ...). The subscription and its handler were removed;
	// retrying the same filter gets the same answer until the broker's
	// configuration changes.
	ErrSubscriptionRefused = errors.New("holdfast: subscription refused by the broker")

	// ErrBadCredentials matches a refusal of the connection by the broker
	// with CONNACK code 4, "bad user name or password". It is permanent: the
	// supervisor stops (AwaitConnected and Flush return ErrStopped wrapping
	// it) instead of retrying. Fix the credentials (Username, Password,
	// Credentials), then call RetryNow.
	ErrBadCredentials = errors.New("holdfast: bad user name or password")

	// ErrNotAuthorized matches a refusal with CONNACK code 5, "not
	// authorised". Mosquitto answers a wrong password this way too. It is
	// permanent, as ErrBadCredentials: fix the credentials or the broker's
	// configuration, then call RetryNow.
	ErrNotAuthorized = errors.New("holdfast: not authorised by the broker")

	// ErrTLSUnknownAuthority matches a TLS handshake that failed because the
	// broker's certificate is not signed by a trusted authority (Config.TLS
	// RootCAs, TLSFiles.CAFile, or the system roots). It is permanent:
	// configure the right CA, then call RetryNow (with TLSFiles, the CA file
	// is read again at that attempt).
	ErrTLSUnknownAuthority = errors.New("holdfast: broker certificate signed by an unknown authority")

	// ErrTLSCertificateExpired matches a TLS handshake that failed because
	// the broker's certificate (or one in its chain) has expired or is not
	// valid yet. It is permanent until the broker's certificate is renewed
	// (or this machine's clock fixed); then call RetryNow.
	ErrTLSCertificateExpired = errors.New("holdfast: broker certificate expired or not yet valid")

	// ErrTLSHostname matches a TLS handshake that failed because the
	// broker's certificate is not valid for the host name being verified:
	// the broker URL's host, or tls.Config.ServerName when set. It is
	// permanent: connect by a name the certificate carries, or set
	// ServerName, then call RetryNow.
	ErrTLSHostname = errors.New("holdfast: broker certificate not valid for the host name")

	// ErrTLSClientCertificate matches a TLS connection that the broker
	// closed with an alert about this client's certificate: missing,
	// unknown, expired, revoked or otherwise rejected (mutual TLS). It is
	// permanent: install a certificate the broker accepts, then call
	// RetryNow. With Config.TLSFiles, a certificate replaced on disk is read
	// at the next attempt; Backoff.OnPermanent = reconnect.SlowOnPermanent
	// keeps attempting, slowly, so that a rotation fixes it unattended.
	ErrTLSClientCertificate = errors.New("holdfast: broker refused the client certificate")

	// ErrCredentials wraps the error of Config.Credentials, which failed a
	// connection attempt. It is retried with backoff, unless the function's
	// error wraps reconnect.Permanent: then the supervisor stops
	// (ErrStopped) until RetryNow.
	ErrCredentials = errors.New("holdfast: credentials function failed")
)
