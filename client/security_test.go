package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// events counts a client's connection events by state.
type events struct {
	mu   sync.Mutex
	n    map[reconnect.State]int
	errs []error // of the Disconnected and Stopped events
}

func (e *events) hook(ev reconnect.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[reconnect.State]int{}
	}
	e.n[ev.State]++
	if ev.Err != nil && (ev.State == reconnect.Disconnected || ev.State == reconnect.Stopped) {
		e.errs = append(e.errs, ev.Err)
	}
}

func (e *events) errors() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]error(nil), e.errs...)
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
		t.Fatalf("%d attempts and %d stops after a permanent refusal, want 1 and 1: %v", a, s, ev.errors())
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

// writeFile replaces path's content atomically (a rename), as a certificate
// rotation would.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// connectedAs reports whether the broker's log shows a connection of
// clientID under user name user.
func connectedAs(m *testbroker.Mosquitto, clientID, user string) bool {
	return strings.Contains(m.Log(), fmt.Sprintf("as %s (", clientID)) &&
		strings.Contains(m.Log(), fmt.Sprintf("u'%s')", user))
}

// TestTLSFilesRotatedBetweenConnections replaces the client certificate and
// key on disk while connected; the next connection presents the new one,
// without a restart of the client. The broker takes the certificate's common
// name as the user name, which its log shows.
func TestTLSFilesRotatedBetweenConnections(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true, TLSIdentityAsUsername: true})
	dir := t.TempDir()
	files := &client.TLSFiles{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	writeFile(t, files.CAFile, m.CAPEM())
	certA, keyA := m.CA().IssueClient(t, "device-a")
	writeFile(t, files.CertFile, certA)
	writeFile(t, files.KeyFile, keyA)

	c := newClient(t, client.Config{Brokers: []string{tlsURL(m, testbroker.TLSServerName)}, ClientID: "rot", TLSFiles: files})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.AwaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	testbroker.Eventually(t, 10*time.Second, func() bool { return connectedAs(m, "rot", "device-a") },
		"the broker sees certificate device-a")

	certB, keyB := m.CA().IssueClient(t, "device-b")
	writeFile(t, files.KeyFile, keyB)
	writeFile(t, files.CertFile, certB)
	m.Restart(t)
	testbroker.Eventually(t, 20*time.Second, func() bool { return c.Stats().Reconnects >= 1 && c.IsConnected() }, "reconnected")
	testbroker.Eventually(t, 10*time.Second, func() bool { return connectedAs(m, "rot", "device-b") },
		"the second connection presents the rotated certificate device-b")
}

// TestGetTLSConfigCalledPerAttempt checks the function is called once per
// attempt at a TLS broker, failed attempts included, and its configuration
// used.
func TestGetTLSConfigCalledPerAttempt(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true})
	dead := fmt.Sprintf("ssl://127.0.0.1:%d", testbroker.FreePort(t))
	var mu sync.Mutex
	var calls []string
	var ev events
	c := newClient(t, client.Config{
		Brokers: []string{dead, m.URL()},
		GetTLSConfig: func(ctx context.Context, broker string) (*tls.Config, error) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, broker)
			return m.ClientTLSConfig(), nil
		},
		Hooks: client.Hooks{OnConnection: ev.hook},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.AwaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := ev.count(reconnect.Connecting); len(calls) != n || n < 2 || calls[0] != dead || calls[len(calls)-1] != m.URL() {
		t.Fatalf("GetTLSConfig calls %v for %d attempts", calls, n)
	}
}

// TestInsecureSkipVerifyNeedsItsOwnOption checks that a TLS configuration
// that skips verification is refused unless Config.InsecureSkipVerify says
// so, and that the option does skip it.
func TestInsecureSkipVerifyNeedsItsOwnOption(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true})
	_, err := client.New(client.Config{Brokers: []string{m.URL()}, TLS: &tls.Config{InsecureSkipVerify: true}})
	if !errors.Is(err, client.ErrInvalidConfig) || !strings.Contains(err.Error(), "InsecureSkipVerify") {
		t.Fatalf("New with tls.Config.InsecureSkipVerify alone: %v, want ErrInvalidConfig naming Config.InsecureSkipVerify", err)
	}
	pahoOpts := mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID("paho-insecure").SetTLSConfig(&tls.Config{InsecureSkipVerify: true})
	if _, err := client.New(client.FromPaho(pahoOpts, "")); !errors.Is(err, client.ErrInvalidConfig) {
		t.Fatalf("New(FromPaho) with an insecure TLS configuration: %v, want ErrInvalidConfig", err)
	}
	// From a function, at the attempt: refused permanently.
	requireRefusedOnce(t, client.Config{Brokers: []string{m.URL()},
		GetTLSConfig: func(context.Context, string) (*tls.Config, error) { return &tls.Config{InsecureSkipVerify: true}, nil },
	}, client.ErrInvalidConfig)
	// With the option: the broker's certificate is not checked (the
	// client trusts no CA of its own here).
	c := newClient(t, client.Config{Brokers: []string{m.URL()}, InsecureSkipVerify: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.AwaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestTLSConfigValidated checks New refuses TLS settings that cannot work.
func TestTLSConfigValidated(t *testing.T) {
	dir := t.TempDir()
	ca := testbroker.NewCA(t, "CA")
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.CertPEM)
	certPEM, keyPEM := ca.IssueClient(t, "x")
	writeFile(t, filepath.Join(dir, "cert.pem"), certPEM)
	writeFile(t, filepath.Join(dir, "key.pem"), keyPEM)
	get := func(context.Context, string) (*tls.Config, error) { return nil, nil }
	for name, cfg := range map[string]client.Config{
		"missing CA file":    {TLSFiles: &client.TLSFiles{CAFile: filepath.Join(dir, "nope.pem")}},
		"CA file not PEM":    {TLSFiles: &client.TLSFiles{CAFile: filepath.Join(dir, "key.pem")}},
		"cert without key":   {TLSFiles: &client.TLSFiles{CertFile: filepath.Join(dir, "cert.pem")}},
		"key not matching":   {TLSFiles: &client.TLSFiles{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "ca.pem")}},
		"no file named":      {TLSFiles: &client.TLSFiles{}},
		"function and files": {GetTLSConfig: get, TLSFiles: &client.TLSFiles{CAFile: filepath.Join(dir, "ca.pem")}},
		"function and TLS":   {GetTLSConfig: get, TLS: &tls.Config{}},
	} {
		cfg.Brokers = []string{"ssl://127.0.0.1:1"}
		c, err := client.New(cfg)
		if c != nil {
			_ = c.Close(context.Background())
		}
		if !errors.Is(err, client.ErrInvalidConfig) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig", name, err)
		}
		if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%s: the error shows key material: %v", name, err)
		}
	}
}

// TestTLSSendsServerName checks the SNI extension: the broker URL's host
// name by default, tls.Config.ServerName when set.
func TestTLSSendsServerName(t *testing.T) {
	ca := testbroker.NewCA(t, "CA")
	for _, tc := range []struct {
		scheme, host, serverName, want string
	}{
		{"ssl", "localhost", "", "localhost"},
		{"mqtts", "127.0.0.1", "broker.example", "broker.example"},
	} {
		if got := sniOf(t, ca, tc.scheme, tc.host, tc.serverName); got != tc.want {
			t.Errorf("%s://%s with ServerName %q: SNI %q, want %q", tc.scheme, tc.host, tc.serverName, got, tc.want)
		}
	}
}

// sniOf returns the server name of the first TLS handshake a client makes
// to a listener at scheme://host.
func sniOf(t *testing.T, ca *testbroker.CA, scheme, host, serverName string) string {
	certPEM, keyPEM := ca.IssueServer(t)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	names := make(chan string, 1)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			select {
			case names <- h.ServerName:
			default:
			}
			return nil, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			_ = conn.Close()
		}
	}()
	url := fmt.Sprintf("%s://%s:%d", scheme, host, ln.Addr().(*net.TCPAddr).Port)
	c := newClient(t, client.Config{Brokers: []string{url}, TLS: &tls.Config{RootCAs: ca.CertPool(), ServerName: serverName}})
	defer c.Close(context.Background())
	select {
	case got := <-names:
		return got
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no TLS handshake", url)
	}
	return ""
}

// TestCredentialsCalledPerAttempt checks Config.Credentials is called once
// per connection attempt, failed ones included, and that the CONNECT uses
// what it returned that time: each call returns a new user and token, and
// the broker's log shows which one each connection used.
func TestCredentialsCalledPerAttempt(t *testing.T) {
	const users = 8
	creds := map[string]string{}
	for i := 1; i <= users; i++ {
		creds[fmt.Sprintf("dev-%d", i)] = fmt.Sprintf("token-%d", i)
	}
	m, p := rig(t, testbroker.MosquittoOptions{Users: creds})
	dead := fmt.Sprintf("tcp://127.0.0.1:%d", testbroker.FreePort(t))
	var mu sync.Mutex
	calls := 0
	var ev events
	c := newClient(t, client.Config{
		Brokers:  []string{dead, p.URL()},
		ClientID: "creds",
		Credentials: func(ctx context.Context) (string, string, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			k := min(calls, users)
			return fmt.Sprintf("dev-%d", k), fmt.Sprintf("token-%d", k), nil
		},
		Hooks: client.Hooks{OnConnection: ev.hook},
	})
	called := func() int { mu.Lock(); defer mu.Unlock(); return calls }
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.AwaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if n, a := called(), ev.count(reconnect.Connecting); n != a || n < 2 {
		t.Fatalf("%d calls for %d attempts (the first at a dead broker)", n, a)
	}
	user := func() string { return fmt.Sprintf("dev-%d", min(called(), users)) }
	first := user()
	testbroker.Eventually(t, 10*time.Second, func() bool { return connectedAs(m, "creds", first) }, "connected as %s", first)

	p.Cut()
	testbroker.Eventually(t, 20*time.Second, func() bool { return c.Stats().Reconnects >= 1 && c.IsConnected() }, "reconnected")
	if n, a := called(), ev.count(reconnect.Connecting); n != a {
		t.Fatalf("%d calls for %d attempts", n, a)
	}
	if second := user(); second == first {
		t.Fatalf("no new call for the reconnection (still %s)", second)
	} else {
		testbroker.Eventually(t, 10*time.Second, func() bool { return connectedAs(m, "creds", second) },
			"reconnected with the new token, as %s", second)
	}
}

// TestCredentialsErrors checks a failing credentials function: retried with
// backoff, unless its error is permanent; a password never shows in the
// errors reported.
func TestCredentialsErrors(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{Users: map[string]string{"dev": "s3cret-token"}})
	var mu sync.Mutex
	calls := 0
	var ev events
	c := newClient(t, client.Config{
		Brokers: []string{m.URL()},
		Credentials: func(ctx context.Context) (string, string, error) {
			mu.Lock()
			defer mu.Unlock()
			if calls++; calls == 1 {
				return "", "", errors.New("token service unavailable")
			}
			return "dev", "s3cret-token", nil
		},
		Hooks: client.Hooks{OnConnection: ev.hook},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.AwaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if errs := ev.errors(); len(errs) != 1 || !errors.Is(errs[0], client.ErrCredentials) || reconnect.IsPermanent(errs[0]) {
		t.Fatalf("attempt errors %v, want one transient ErrCredentials", errs)
	}

	requireRefusedOnce(t, client.Config{Brokers: []string{m.URL()}, ClientID: "perm",
		Credentials: func(ctx context.Context) (string, string, error) {
			return "", "", reconnect.Permanent(errors.New("device not provisioned"))
		},
	}, client.ErrCredentials)
	requireRefusedOnce(t, client.Config{Brokers: []string{m.URL()}, ClientID: "nouser",
		Credentials: func(ctx context.Context) (string, string, error) { return "", "s3cret-token", nil },
	}, client.ErrInvalidConfig)
}

// TestBrokerURLCredentials checks the user information of a broker URL is
// used for that broker (as paho does), and never shown in Stats.
func TestBrokerURLCredentials(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{Users: map[string]string{"dev": "url-s3cret"}})
	dead := fmt.Sprintf("tcp://other:wrong@127.0.0.1:%d", testbroker.FreePort(t))
	c := newClient(t, client.Config{Brokers: []string{dead, "tcp://dev:url-s3cret@" + m.Addr()}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.AwaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if st := fmt.Sprintf("%+v", c.Stats()); strings.Contains(st, "url-s3cret") {
		t.Fatalf("Stats shows the password: %s", st)
	}
}

// TestFromPahoCredentialsProvider checks paho's SetCredentialsProvider is
// honoured through FromPaho: called once per attempt, its result used.
func TestFromPahoCredentialsProvider(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{Users: map[string]string{"dev": "paho-token"}})
	var mu sync.Mutex
	calls := 0
	opts := mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID("paho-creds").
		SetUsername("dev").SetPassword("stale").
		SetCredentialsProvider(func() (string, string) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			return "dev", "paho-token"
		})
	cfg := client.FromPaho(opts, "")
	var ev events
	cfg.Hooks.OnConnection = ev.hook
	c := newClient(t, cfg)
	cli := c.Paho()
	if tok := cli.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("Connect: %v", tok.Error())
	}
	mu.Lock()
	defer mu.Unlock()
	if n := ev.count(reconnect.Connecting); calls != n {
		t.Fatalf("provider called %d times for %d attempts", calls, n)
	}
}
