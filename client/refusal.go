package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"reflect"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// refusal turns the error of a failed connection attempt into what the
// supervisor classifies: a CONNACK refusal becomes a *reconnect.RefusedError
// (permanent for codes 1, 2, 4 and 5), wrapped with ErrBadCredentials or
// ErrNotAuthorized; a TLS failure that retrying cannot fix becomes
// reconnect.Permanent, wrapped with its ErrTLS sentinel. Everything else
// (dial errors, timeouts, resets) is returned as it is: transient.
func refusal(err error, connack byte) error {
	if connack != 0 && connack < 0x80 {
		re := &reconnect.RefusedError{Code: reconnect.ConnackCode(connack), Err: err}
		switch re.Code {
		case reconnect.ConnackBadUsernameOrPassword:
			return fmt.Errorf("%w: %w", ErrBadCredentials, re)
		case reconnect.ConnackNotAuthorized:
			return fmt.Errorf("%w: %w", ErrNotAuthorized, re)
		}
		return re
	}
	if s := tlsSentinel(err); s != nil {
		return reconnect.Permanent(fmt.Errorf("%w: %w", s, err))
	}
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		// Another verification failure (a certificate not allowed to sign,
		// an unsupported key...): retrying the same configuration cannot help.
		return reconnect.Permanent(err)
	}
	return err
}

// tlsSentinel returns the ErrTLS sentinel for err, or nil.
func tlsSentinel(err error) error {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	switch {
	case errors.As(err, &ua):
		return ErrTLSUnknownAuthority
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return ErrTLSCertificateExpired
	case errors.As(err, &hn):
		return ErrTLSHostname
	}
	if code, ok := remoteAlert(err); ok {
		switch code {
		case 42, // bad_certificate
			43,  // unsupported_certificate
			44,  // certificate_revoked
			45,  // certificate_expired
			46,  // certificate_unknown
			48,  // unknown_ca
			116: // certificate_required
			return ErrTLSClientCertificate
		}
	}
	return nil
}

// remoteAlert returns the code of a TLS alert the peer sent. crypto/tls
// reports one as a *net.OpError with Op "remote error" whose Err is its
// unexported alert type, a uint8 (tls.AlertError is only for QUIC).
func remoteAlert(err error) (uint8, bool) {
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return uint8(ae), true
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return 0, false
	}
	if v := reflect.ValueOf(op.Err); v.Kind() == reflect.Uint8 {
		return uint8(v.Uint()), true
	}
	return 0, false
}
