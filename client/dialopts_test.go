package client_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/internal/testbroker"
)

// connectPaho connects through the adapter of a client built by FromPaho.
func connectPaho(t *testing.T, opts *mqtt.ClientOptions) *client.Client {
	t.Helper()
	c := newClient(t, client.FromPaho(opts, ""))
	if tok := c.Paho().Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("Connect: %v", tok.Error())
	}
	return c
}

// countingDialer counts the connections it opens.
type countingDialer struct {
	n  atomic.Int32
	nd net.Dialer
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	return d.nd.DialContext(ctx, network, addr)
}

// TestDialerUsed checks Config.Dialer opens the connections of plain and
// TLS brokers, and that paho's SetDialer is carried over by FromPaho.
func TestDialerUsed(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true})
	b := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	var d countingDialer
	awaitConnected(t, newClient(t, client.Config{Brokers: []string{b.URL()}, Dialer: &d}))
	awaitConnected(t, newClient(t, client.Config{Brokers: []string{m.URL()}, TLS: m.ClientTLSConfig(), Dialer: &d}))
	if n := d.n.Load(); n < 2 {
		t.Fatalf("the dialer opened %d connections, want 2", n)
	}

	var controls atomic.Int32
	nd := &net.Dialer{Timeout: 5 * time.Second, Control: func(string, string, syscall.RawConn) error { controls.Add(1); return nil }}
	connectPaho(t, mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("paho-dialer").SetDialer(nd))
	if controls.Load() == 0 {
		t.Fatal("paho's SetDialer was not used")
	}
}

// TestUnixSocketBroker connects to Mosquitto's Unix socket listener, by
// unix:///path as paho supports it, natively and through FromPaho.
func TestUnixSocketBroker(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "mqtt.sock")
	testbroker.StartMosquitto(t, testbroker.MosquittoOptions{Extra: "listener 0 " + sock})
	awaitConnected(t, newClient(t, client.Config{Brokers: []string{"unix://" + sock}}))
	connectPaho(t, mqtt.NewClientOptions().AddBroker("unix://"+sock).SetClientID("paho-unix"))
}

// wsBridge is a WebSocket endpoint that relays MQTT to a TCP broker, and
// records the upgrade requests it received.
type wsBridge struct {
	srv *httptest.Server
	mu  sync.Mutex
	req []*http.Request
	wg  sync.WaitGroup
}

func newWSBridge(t *testing.T, broker string) *wsBridge {
	t.Helper()
	w := &wsBridge{}
	up := websocket.Upgrader{Subprotocols: []string{"mqtt"}}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.req = append(w.req, r)
		w.mu.Unlock()
		ws, err := up.Upgrade(rw, r, nil)
		if err != nil {
			return
		}
		tcp, err := net.Dial("tcp", broker)
		if err != nil {
			_ = ws.Close()
			return
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			defer tcp.Close()
			for {
				_, r, err := ws.NextReader()
				if err != nil {
					return
				}
				if _, err := io.Copy(tcp, r); err != nil {
					return
				}
			}
		}()
		defer ws.Close()
		buf := make([]byte, 4096)
		for {
			n, err := tcp.Read(buf)
			if err != nil {
				return
			}
			if err := ws.WriteMessage(websocket.BinaryMessage, buf[:n]); err != nil {
				return
			}
		}
	}))
	t.Cleanup(func() { w.srv.CloseClientConnections(); w.srv.Close(); w.wg.Wait() })
	return w
}

func (w *wsBridge) URL() string { return "ws" + strings.TrimPrefix(w.srv.URL, "http") + "/mqtt" }

func (w *wsBridge) headers(name string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, r := range w.req {
		out = append(out, r.Header.Get(name))
	}
	return out
}

// TestWebSocketHeadersAndOptions checks the HTTP headers and the proxy
// function of ws:// connections, from Config.WebSocket and from paho's
// SetHTTPHeaders and SetWebsocketOptions.
func TestWebSocketHeadersAndOptions(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	w := newWSBridge(t, m.Addr())
	var proxied atomic.Int32
	proxy := func(*http.Request) (*url.URL, error) { proxied.Add(1); return nil, nil }

	awaitConnected(t, newClient(t, client.Config{Brokers: []string{w.URL()}, ClientID: "ws-native",
		WebSocket: &client.WebSocketOptions{Header: http.Header{"X-Device": {"native"}}, Proxy: proxy, ReadBufferSize: 8192}}))
	connectPaho(t, mqtt.NewClientOptions().AddBroker(w.URL()).SetClientID("ws-paho").
		SetHTTPHeaders(http.Header{"X-Device": {"paho"}}).
		SetWebsocketOptions(&mqtt.WebsocketOptions{Proxy: proxy, WriteBufferSize: 8192}))
	if got := w.headers("X-Device"); len(got) < 2 || got[0] != "native" || got[len(got)-1] != "paho" {
		t.Fatalf("X-Device headers %q", got)
	}
	if proxied.Load() < 2 {
		t.Fatalf("the proxy function was called %d times", proxied.Load())
	}
}

func pingTimeout(c *client.Client) time.Duration {
	r := c.Paho().OptionsReader()
	return r.PingTimeout()
}

// TestPingTimeoutHonoured checks Config.PingTimeout and paho's
// SetPingTimeout reach paho's keepalive.
func TestPingTimeoutHonoured(t *testing.T) {
	b := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	c := newClient(t, client.Config{Brokers: []string{b.URL()}, KeepAlive: 4 * time.Second, PingTimeout: 3 * time.Second})
	if got := pingTimeout(c); got != 3*time.Second {
		t.Fatalf("PingTimeout %v, want 3s", got)
	}
	c = newClient(t, client.Config{Brokers: []string{b.URL()}, KeepAlive: 4 * time.Second})
	if got := pingTimeout(c); got != time.Second {
		t.Fatalf("default PingTimeout %v, want KeepAlive/4", got)
	}
	p := connectPaho(t, mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("paho-ping").SetPingTimeout(7*time.Second))
	if got := pingTimeout(p); got != 7*time.Second {
		t.Fatalf("paho's SetPingTimeout: %v, want 7s", got)
	}
	if _, err := client.New(client.Config{Brokers: []string{b.URL()}, PingTimeout: -time.Second}); !errors.Is(err, client.ErrInvalidConfig) {
		t.Fatalf("negative PingTimeout: %v", err)
	}
}

// TestFromPahoConnectionHooks checks paho's connection-attempt handler
// (the TLS configuration of each attempt) and custom connection function
// are carried out.
func TestFromPahoConnectionHooks(t *testing.T) {
	m := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{TLS: true})
	var attempts atomic.Int32
	opts := mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID("paho-attempt").
		SetConnectionAttemptHandler(func(broker *url.URL, base *tls.Config) *tls.Config {
			attempts.Add(1)
			if broker.String() != m.URL() {
				t.Errorf("attempt handler got broker %v", broker)
			}
			return m.ClientTLSConfig()
		})
	connectPaho(t, opts)
	if attempts.Load() == 0 {
		t.Fatal("the connection attempt handler was not called")
	}

	b := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	var opened atomic.Int32
	opts = mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID("paho-open").
		SetCustomOpenConnectionFn(func(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
			opened.Add(1)
			return net.Dial("tcp", u.Host)
		})
	c := connectPaho(t, opts)
	if opened.Load() == 0 {
		t.Fatal("the custom connection function was not called")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, "open/t", []byte("x"), client.QoS1)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDialProxyFromEnvironment checks ALL_PROXY (SOCKS5) is used for
// tcp:// brokers, as paho does. The proxy environment is read once per
// process, so the client runs in a child process of the test binary.
func TestDialProxyFromEnvironment(t *testing.T) {
	if broker := os.Getenv("HOLDFAST_TEST_PROXY_BROKER"); broker != "" {
		awaitConnected(t, newClient(t, client.Config{Brokers: []string{broker}, ClientID: "via-proxy"}))
		return
	}
	b := testbroker.StartMosquitto(t, testbroker.MosquittoOptions{})
	s := startSOCKS5(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestDialProxyFromEnvironment$", "-test.count=1")
	cmd.Env = append(os.Environ(), "HOLDFAST_TEST_PROXY_BROKER="+b.URL(), "ALL_PROXY=socks5://"+s.addr(), "NO_PROXY=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if got := s.targets(); len(got) == 0 || got[0] != b.Addr() {
		t.Fatalf("the SOCKS5 proxy relayed to %v, want %s", got, b.Addr())
	}
}

// socks5 is a minimal SOCKS5 proxy (no authentication, CONNECT only).
type socks5 struct {
	ln   net.Listener
	mu   sync.Mutex
	dest []string
	wg   sync.WaitGroup
}

func startSOCKS5(t *testing.T) *socks5 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &socks5{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() { defer s.wg.Done(); s.serve(c) }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); s.wg.Wait() })
	return s
}

func (s *socks5) addr() string { return s.ln.Addr().String() }

func (s *socks5) targets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.dest...)
}

func (s *socks5) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(c, hdr); err != nil || hdr[0] != 5 {
		return
	}
	if _, err := io.ReadFull(c, make([]byte, hdr[1])); err != nil {
		return
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return
	}
	req := make([]byte, 4)
	if _, err := io.ReadFull(c, req); err != nil || req[1] != 1 {
		return
	}
	var host string
	switch req[3] {
	case 1:
		ip := make([]byte, 4)
		if _, err := io.ReadFull(c, ip); err != nil {
			return
		}
		host = net.IP(ip).String()
	case 3:
		n := make([]byte, 1)
		if _, err := io.ReadFull(c, n); err != nil {
			return
		}
		name := make([]byte, n[0])
		if _, err := io.ReadFull(c, name); err != nil {
			return
		}
		host = string(name)
	default:
		return
	}
	port := make([]byte, 2)
	if _, err := io.ReadFull(c, port); err != nil {
		return
	}
	dest := net.JoinHostPort(host, fmt.Sprint(binary.BigEndian.Uint16(port)))
	s.mu.Lock()
	s.dest = append(s.dest, dest)
	s.mu.Unlock()
	up, err := net.Dial("tcp", dest)
	if err != nil {
		_, _ = c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
		return
	}
	defer up.Close()
	if _, err := c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() { _, _ = io.Copy(up, c); _ = up.Close(); close(done) }()
	_, _ = io.Copy(c, up)
	_ = c.Close()
	<-done
}
