package client_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
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

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestNoSecretsInLogsErrorsOrStats runs full sessions with a password, a
// token from a credentials function, a password in a broker URL, a wrong
// password and a client key, capturing everything: Holdfast's logs at
// debug level, paho's own loggers (all four), every connection event's
// error, the errors returned and Stats. None of the secrets, nor a payload,
// may appear. paho's loggers are process-wide, so the sessions run in a
// child process of the test binary.
func TestNoSecretsInLogsErrorsOrStats(t *testing.T) {
	if os.Getenv("HOLDFAST_TEST_SECRETS_CHILD") != "" {
		secretsSession(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNoSecretsInLogsErrorsOrStats$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "HOLDFAST_TEST_SECRETS_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestNoSecretsInLogsErrorsOrStats")) {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func secretsSession(t *testing.T) {
	const (
		password     = "Pa55word-for-dev-7f3a"
		token        = "eyJhbGciOiJIUzI1NiJ9.token-for-jwt-91c2"
		urlPassword  = "url-pa55word-44d1"
		wrongPass    = "wr0ng-pa55word-e5b0"
		payloadMark  = "PAYLOAD-SHOULD-NOT-BE-LOGGED"
		deviceUser   = "dev"
		tokenUser    = "jwt-user"
		urlUser      = "url-user"
		clientCommon = "device-7"
	)
	var captured lockedBuffer
	logger := slog.New(slog.NewTextHandler(&captured, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pahoLog := log.New(&captured, "paho ", 0)
	mqtt.DEBUG, mqtt.WARN, mqtt.ERROR, mqtt.CRITICAL = pahoLog, pahoLog, pahoLog, pahoLog
	t.Cleanup(func() {
		mqtt.DEBUG, mqtt.WARN, mqtt.ERROR, mqtt.CRITICAL = mqtt.NOOPLogger{}, mqtt.NOOPLogger{}, mqtt.NOOPLogger{}, mqtt.NOOPLogger{}
	})
	record := func(what string, v any) { fmt.Fprintf(&captured, "%s: %+v\n", what, v) }
	hooks := client.Hooks{OnConnection: func(ev reconnect.Event) { record("event", ev) }}

	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true, TLSRequireClientCert: true,
		Users: map[string]string{deviceUser: password, tokenUser: token, urlUser: urlPassword}})
	dir := t.TempDir()
	certPEM, keyPEM := m.CA().IssueClient(t, clientCommon)
	files := &client.TLSFiles{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	writeFile(t, files.CAFile, m.CAPEM())
	writeFile(t, files.CertFile, certPEM)
	writeFile(t, files.KeyFile, keyPEM)
	broker := tlsURL(m, testbroker.TLSServerName)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A session with a password: publish, receive, a broker restart, close.
	got := make(chan string, 8)
	c := newClient(t, client.Config{Brokers: []string{broker}, ClientID: "secret-dev", OutboxDir: t.TempDir(),
		Username: deviceUser, Password: password, TLSFiles: files, Logger: logger, Hooks: hooks,
		Subscriptions: []client.Subscription{{Filter: "secret/#", QoS: 1, Handler: func(_ context.Context, msg client.Message) error {
			got <- string(msg.Payload)
			return nil
		}}},
	})
	if err := c.AwaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	publish := func(c *client.Client, n int) {
		t.Helper()
		r, err := c.Publish(ctx, "secret/t", []byte(fmt.Sprintf("%s %d", payloadMark, n)), client.QoS1)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		record("stats", c.Stats())
	}
	publish(c, 1)
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("message not received")
	}
	m.Restart(t)
	publish(c, 2)
	record("close", c.Close(ctx))

	// A session with a token from a credentials function.
	c = newClient(t, client.Config{Brokers: []string{broker}, TLSFiles: files, Logger: logger, Hooks: hooks,
		Credentials: func(context.Context) (string, string, error) { return tokenUser, token, nil }})
	publish(c, 3)
	record("close", c.Close(ctx))

	// A password in the broker URL.
	c = newClient(t, client.Config{Brokers: []string{fmt.Sprintf("ssl://%s:%s@%s:%d", urlUser, urlPassword, testbroker.TLSServerName, m.Port())},
		TLSFiles: files, Logger: logger, Hooks: hooks})
	publish(c, 4)
	record("close", c.Close(ctx))

	// Refusals: a wrong password, in the Config and in the URL.
	for _, cfg := range []client.Config{
		{Brokers: []string{broker}, Username: deviceUser, Password: wrongPass},
		{Brokers: []string{fmt.Sprintf("ssl://%s:%s@%s:%d", urlUser, wrongPass, testbroker.TLSServerName, m.Port())}},
	} {
		cfg.TLSFiles, cfg.Logger, cfg.Hooks = files, logger, hooks
		c = newClient(t, cfg)
		record("refused", c.AwaitConnected(ctx))
		record("stats", c.Stats())
		record("close", c.Close(ctx))
	}

	keyBody := strings.Join(strings.Split(strings.TrimSpace(string(keyPEM)), "\n")[1:3], "")
	out := captured.String()
	for _, want := range []string{"level=DEBUG", "not authorised", "paho [client]", "stats: {State:Connected", "state=Connected"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the capture misses %q (debug logs, a refusal, paho's logs, Stats, events):\n%s", want, out)
		}
	}
	for name, secret := range map[string]string{
		"password": password, "token": token, "URL password": urlPassword, "wrong password": wrongPass,
		"private key": keyBody, "payload": payloadMark,
	} {
		if strings.Contains(out, secret) {
			i := strings.Index(out, secret)
			t.Errorf("the %s appears in the captured output: ...%s...", name, out[max(0, i-200):min(len(out), i+len(secret)+50)])
		}
	}
}
