package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"syscall"
	"testing"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// TestRefusalClassification checks which failed attempts stop the
// supervisor (permanent, with a typed error) and which are retried.
func TestRefusalClassification(t *testing.T) {
	// What crypto/tls returns for an alert from the peer: its alert type is
	// unexported, so build one of the same kind.
	remote := func(code uint8) error {
		v := reflect.New(reflect.TypeOf(tlsAlertKind)).Elem()
		v.SetUint(uint64(code))
		return &net.OpError{Op: "remote error", Err: v.Interface().(error)}
	}
	wrap := func(err error) error { return fmt.Errorf("network Error : %w", err) } // as paho does
	verify := func(err error) error { return &tls.CertificateVerificationError{Err: err} }
	cases := []struct {
		name      string
		err       error
		connack   byte
		permanent bool
		want      error
	}{
		{"dial refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, 0, false, nil},
		{"reset", wrap(&net.OpError{Op: "read", Err: syscall.ECONNRESET}), 0, false, nil},
		{"eof", wrap(io.EOF), 0, false, nil},
		{"timeout", wrap(context.DeadlineExceeded), 0, false, nil},
		{"server unavailable", errors.New("x"), 3, false, nil},
		{"internal error alert", wrap(remote(80)), 0, false, nil},
		{"bad credentials", errors.New("x"), 4, true, ErrBadCredentials},
		{"not authorised", errors.New("x"), 5, true, ErrNotAuthorized},
		{"identifier rejected", errors.New("x"), 2, true, reconnect.ErrRefused},
		{"unknown authority", wrap(verify(x509.UnknownAuthorityError{})), 0, true, ErrTLSUnknownAuthority},
		{"expired", wrap(verify(x509.CertificateInvalidError{Reason: x509.Expired})), 0, true, ErrTLSCertificateExpired},
		{"hostname", wrap(verify(x509.HostnameError{Certificate: &x509.Certificate{}, Host: "h"})), 0, true, ErrTLSHostname},
		{"other verification failure", wrap(verify(x509.CertificateInvalidError{Reason: x509.NotAuthorizedToSign})), 0, true, nil},
		{"certificate required", wrap(remote(116)), 0, true, ErrTLSClientCertificate},
		{"bad certificate", wrap(remote(42)), 0, true, ErrTLSClientCertificate},
	}
	for _, tc := range cases {
		got := refusal(tc.err, tc.connack)
		if p := reconnect.IsPermanent(got); p != tc.permanent {
			t.Errorf("%s: permanent = %v, want %v (%v)", tc.name, p, tc.permanent, got)
		}
		if tc.want != nil && !errors.Is(got, tc.want) {
			t.Errorf("%s: %v does not match %v", tc.name, got, tc.want)
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("%s: the cause is lost: %v", tc.name, got)
		}
	}
}

// tlsAlertKind is a value of crypto/tls's unexported alert type, taken from
// a real handshake failure.
var tlsAlertKind = func() any {
	c, s := net.Pipe()
	defer c.Close()
	go func() {
		defer s.Close()
		// A server with no certificate fails the handshake with an alert.
		_ = tls.Server(s, &tls.Config{}).Handshake()
	}()
	err := tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake()
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" {
		panic(fmt.Sprintf("no remote alert from a failed handshake: %v", err))
	}
	return op.Err
}()
