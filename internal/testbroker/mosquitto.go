package testbroker

import (
	"crypto/tls"
	"errors"
	"testing"

	"github.com/holdfast-mqtt/holdfast/internal/mosquitto"
)

// logTailBytes is how much of the broker's log a failure shows.
const logTailBytes = 32 * 1024

// MosquittoOptions configures StartMosquitto. The zero value is a plain TCP
// broker with persistence, anonymous access and a large queue limit.
type MosquittoOptions struct {
	// NoPersistence turns persistence off. By default it is on and the
	// database is saved at every graceful stop (autosave_interval 0).
	NoPersistence bool
	// TLS makes the listener TLS-only, with a CA and a server certificate
	// (ECDSA, for 127.0.0.1 and "localhost") generated for the test; see CA,
	// CAPEM and ClientTLSConfig. URL then starts with "ssl://".
	TLS bool
	// TLSServerCert, with TLS, issues the server's certificate from the
	// generated CA instead of CA.IssueServer (an expired one, one for another
	// host name, ...).
	TLSServerCert func(t testing.TB, ca *CA) (certPEM, keyPEM []byte)
	// TLSRequireClientCert, with TLS, makes the broker require a client
	// certificate issued by the generated CA (mutual TLS); see CA.IssueClient.
	TLSRequireClientCert bool
	// TLSIdentityAsUsername, with TLS, makes the client certificate's common
	// name the user name the broker logs (u'name' in its connection
	// messages); it implies TLSRequireClientCert.
	TLSIdentityAsUsername bool
	// Users maps user names to passwords. When non-empty a password file is
	// written with mosquitto_passwd and anonymous access is refused.
	Users map[string]string
	// ACL, when non-empty, is written verbatim as the broker's acl_file.
	ACL string
	// MaxInflightMessages sets max_inflight_messages; 0 keeps Mosquitto's
	// default (20).
	MaxInflightMessages int
	// MaxQueuedMessages sets max_queued_messages; 0 means 1,000,000.
	MaxQueuedMessages int
	// Debug makes the broker log a line for every packet it sends or
	// receives (log_type all), for a test that reads them in Log. Without
	// it the log has everything else (connections, subscriptions, errors):
	// at thousands of messages per second the debug lines would cost the
	// broker more than the messages do.
	Debug bool
	// Extra is appended verbatim to the generated configuration.
	Extra string
}

// Mosquitto is a mosquitto child process run for one test (a testing.TB
// wrapper over internal/mosquitto). Its methods take the calling test (which
// may be a subtest) to report failures.
type Mosquitto struct {
	opts MosquittoOptions
	dir  string // config, TLS files, password file, data/
	ca   *CA    // nil without TLS
	b    *mosquitto.Broker
}

// StartMosquitto starts mosquitto as a child process on a free 127.0.0.1 port
// with its own configuration and persistence directory under t.TempDir(),
// and returns once it accepts TCP connections. It skips the test when
// mosquitto is not installed, or fails it when HOLDFAST_REQUIRE_MOSQUITTO=1.
// The broker is stopped by t.Cleanup; if the test failed, the tail of its
// log is written with t.Log.
func StartMosquitto(t testing.TB, opts MosquittoOptions) *Mosquitto {
	t.Helper()
	path, ok := MosquittoPath()
	if !ok {
		missing(t, "mosquitto")
	}
	m := &Mosquitto{opts: opts, dir: t.TempDir()}
	var tm *mosquitto.TLS
	if opts.TLS {
		m.ca = NewCA(t, "Holdfast test CA")
		issue := opts.TLSServerCert
		if issue == nil {
			issue = func(t testing.TB, ca *CA) ([]byte, []byte) { return ca.IssueServer(t) }
		}
		certPEM, keyPEM := issue(t, m.ca)
		tm = &mosquitto.TLS{CAPEM: m.ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM,
			RequireCertificate: opts.TLSRequireClientCert, IdentityAsUsername: opts.TLSIdentityAsUsername}
	}
	b, err := mosquitto.New(m.options(path, tm))
	switch {
	case errors.Is(err, mosquitto.ErrNotInstalled):
		missing(t, "mosquitto_passwd") // the binary itself was found above
	case err != nil:
		t.Fatalf("testbroker: %v", err)
	}
	m.b = b
	// Registered after TempDir's cleanup, so it runs before the directory is removed.
	t.Cleanup(func() {
		_ = b.Close()
		if t.Failed() {
			t.Logf("mosquitto log (%s), last %d bytes:\n%s", b.ConfPath(), logTailBytes, b.LogTail(logTailBytes))
		}
	})
	if err := b.Start(); err != nil {
		t.Fatalf("testbroker: start mosquitto: %v\nlog:\n%s", err, b.LogTail(logTailBytes))
	}
	return m
}

// Addr returns "127.0.0.1:port".
func (m *Mosquitto) Addr() string { return m.b.Addr() }

// Port returns the broker's TCP port, which stays the same across restarts.
func (m *Mosquitto) Port() int { return m.b.Port() }

// URL returns "tcp://" + Addr(), or "ssl://" + Addr() with TLS.
func (m *Mosquitto) URL() string { return m.b.URL() }

// Dir returns the directory holding the broker's configuration and data.
func (m *Mosquitto) Dir() string { return m.dir }

// CA returns the generated certificate authority, or nil without TLS.
func (m *Mosquitto) CA() *CA { return m.ca }

// CAPEM returns the generated CA certificate, PEM-encoded, or nil without TLS.
func (m *Mosquitto) CAPEM() []byte {
	if m.ca == nil {
		return nil
	}
	return m.ca.CertPEM
}

// ClientTLSConfig returns a new client configuration that trusts only the
// generated CA, with ServerName set; nil without TLS.
func (m *Mosquitto) ClientTLSConfig() *tls.Config {
	if m.ca == nil {
		return nil
	}
	return m.ca.ClientTLSConfig()
}

// Log returns everything the broker has logged so far, across restarts.
// Each run starts with a line beginning "==== testbroker:".
func (m *Mosquitto) Log() string { return m.b.Log() }

// Running reports whether the broker process is running.
func (m *Mosquitto) Running() bool { return m.b.Running() }

// Restart stops the broker gracefully (SIGTERM: persistence is saved), waits
// for it to exit, starts it again on the same port with the same directory,
// and waits until it accepts connections.
func (m *Mosquitto) Restart(t testing.TB) {
	t.Helper()
	m.Stop(t)
	m.Start(t)
}

// Stop sends SIGTERM and waits for the broker to exit, which saves its
// persistence database. It fails the test if the broker exits with an error,
// logs that it could not save its database, or has to be killed after 10s.
// Stopping a stopped broker does nothing.
func (m *Mosquitto) Stop(t testing.TB) {
	t.Helper()
	switch err := m.b.Stop(); {
	case errors.Is(err, mosquitto.ErrNotSaved):
		t.Fatalf("testbroker: %v", err)
	case err != nil:
		t.Fatalf("testbroker: stop mosquitto: %v\nlog:\n%s", err, m.b.LogTail(logTailBytes))
	}
}

// Kill sends SIGKILL and waits for the process to be reaped: nothing is
// saved. Killing a stopped broker does nothing.
func (m *Mosquitto) Kill(t testing.TB) {
	t.Helper()
	m.b.Kill()
}

// Start starts a stopped broker again on the same port with the same
// directory and waits until it accepts connections. It fails the test if the
// broker is already running or does not come up.
func (m *Mosquitto) Start(t testing.TB) {
	t.Helper()
	if m.Running() {
		t.Fatal("testbroker: Start: mosquitto is already running")
	}
	if err := m.b.Start(); err != nil {
		t.Fatalf("testbroker: start mosquitto on port %d: %v\nlog:\n%s", m.Port(), err, m.b.LogTail(logTailBytes))
	}
}
