package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// events counts a client's connection events by state.
type events struct {
	mu sync.Mutex
	n  map[reconnect.State]int
}

func (e *events) hook(ev reconnect.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[reconnect.State]int{}
	}
	e.n[ev.State]++
}

func (e *events) count(s reconnect.State) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[s]
}

// quietWindow is how long a test watches for attempts that must not come.
// The clients under test back off from 20ms: a loop would show dozens.
const quietWindow = 500 * time.Millisecond

// requireRefusedOnce starts a client with cfg, expects its first attempt to
// be refused with an error matching want, classified permanent, and checks
// the client then stops: one attempt, one Stopped event, no loop.
func requireRefusedOnce(t *testing.T, cfg client.Config, want error) {
	t.Helper()
	var ev events
	cfg.Hooks.OnConnection = ev.hook
	c := newClient(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.AwaitConnected(ctx)
	if !errors.Is(err, client.ErrStopped) || !errors.Is(err, want) {
		t.Fatalf("AwaitConnected: %v, want ErrStopped and %v", err, want)
	}
	t.Logf("refused: %v", err)
	if !reconnect.IsPermanent(err) {
		t.Fatalf("%v is not classified permanent", err)
	}
	time.Sleep(quietWindow) // attempts that must not come
	if a, s := ev.count(reconnect.Connecting), ev.count(reconnect.Stopped); a != 1 || s != 1 {
		t.Fatalf("%d attempts and %d stops after a permanent refusal, want 1 and 1", a, s)
	}
	if st := c.Stats(); st.State != reconnect.Stopped {
		t.Fatalf("state %v, want Stopped", st.State)
	}
}

// tlsURL is the broker's TLS URL with a host name instead of 127.0.0.1.
func tlsURL(m *testbroker.Mosquitto, host string) string {
	return fmt.Sprintf("ssl://%s:%d", host, m.Port())
}

// TestTLSCustomCAVerifiesHostFromURL connects with a configuration that only
// names the CA: the host name to verify (and to send as SNI) comes from the
// broker URL.
func TestTLSCustomCAVerifiesHostFromURL(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true})
	c := newClient(t, client.Config{
		Brokers: []string{tlsURL(m, testbroker.TLSServerName)},
		TLS:     &tls.Config{RootCAs: m.CA().CertPool()},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AwaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestTLSRefusalsArePermanent checks that a server certificate the client
// cannot trust stops the client with a typed error, once.
func TestTLSRefusalsArePermanent(t *testing.T) {
	t.Run("UnknownAuthority", func(t *testing.T) {
		m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true})
		other := testbroker.NewCA(t, "Another CA")
		requireRefusedOnce(t, client.Config{Brokers: []string{m.URL()}, TLS: other.ClientTLSConfig()},
			client.ErrTLSUnknownAuthority)
	})
	t.Run("Expired", func(t *testing.T) {
		m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true,
			TLSServerCert: func(t testing.TB, ca *testbroker.CA) ([]byte, []byte) {
				now := time.Now()
				return ca.Issue(t, testbroker.Leaf{CommonName: testbroker.TLSServerName, Server: true,
					DNSNames: []string{testbroker.TLSServerName}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
					NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
			}})
		requireRefusedOnce(t, client.Config{Brokers: []string{m.URL()}, TLS: m.ClientTLSConfig()},
			client.ErrTLSCertificateExpired)
	})
	t.Run("Hostname", func(t *testing.T) {
		m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true,
			TLSServerCert: func(t testing.TB, ca *testbroker.CA) ([]byte, []byte) {
				now := time.Now()
				return ca.Issue(t, testbroker.Leaf{CommonName: "broker.example", Server: true,
					DNSNames: []string{"broker.example"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
			}})
		requireRefusedOnce(t, client.Config{
			Brokers: []string{tlsURL(m, testbroker.TLSServerName)},
			TLS:     &tls.Config{RootCAs: m.CA().CertPool()},
		}, client.ErrTLSHostname)
	})
}

// TestMutualTLS connects to a broker that requires a client certificate:
// with one issued by its CA the client connects; without one it is refused,
// permanently.
func TestMutualTLS(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true, TLSRequireClientCert: true})
	certPEM, keyPEM := m.CA().IssueClient(t, "device-1")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("WithCertificate", func(t *testing.T) {
		tc := m.ClientTLSConfig()
		tc.Certificates = []tls.Certificate{cert}
		c := newClient(t, client.Config{Brokers: []string{m.URL()}, TLS: tc})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.AwaitConnected(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("WithoutCertificate", func(t *testing.T) {
		requireRefusedOnce(t, client.Config{Brokers: []string{m.URL()}, TLS: m.ClientTLSConfig()},
			client.ErrTLSClientCertificate)
	})
}

// TestWrongPasswordRefusedOnce checks a wrong password is reported once,
// with a typed error, and not retried in a loop.
func TestWrongPasswordRefusedOnce(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{Users: map[string]string{"dev": "right"}})
	// Mosquitto answers a wrong password with "not authorised" (5).
	requireRefusedOnce(t, client.Config{Brokers: []string{m.URL()}, Username: "dev", Password: "wrong"},
		client.ErrNotAuthorized)
}
