// Command service is a backend consumer built on Holdfast. It shows:
//
//   - a shared subscription ($share/GROUP/FILTER): run several instances
//     with the same -group and the broker spreads the messages among them;
//   - acknowledgement after handling: the handler publishes its result and
//     returns only once that result is durable in the outbox, so the order
//     is acknowledged to the broker only then (a crash before means
//     redelivery, never loss);
//   - dead-lettering: an order the handler keeps refusing (a "poison"
//     payload) goes, after Config.HandlerRetries, to Config.DeadLetter,
//     which publishes it to -dead-letter and lets it be acknowledged;
//   - graceful shutdown on SIGTERM or SIGINT (signal.NotifyContext): no new
//     orders, the results already accepted are delivered (up to 10s), the
//     session is closed, the metrics endpoint stops last;
//   - metrics in the Prometheus text format on http://-listen/metrics: the
//     outbox's depth, bytes and oldest age, messages in flight,
//     acknowledged, dropped, expired, reconnects, the connection state,
//     inbound counters, and a histogram of the commit latency of Publish.
//
// Without -broker it starts an embedded broker, and -demo publishes that
// many orders (every -poison-every th one poison) once it is subscribed, so
// it runs with nothing installed:
//
//	go run ./examples/service
//	curl -s http://127.0.0.1:9464/metrics | grep ^holdfast_
//	go run ./examples/service -broker tcp://127.0.0.1:1883 -client-id svc-2 -demo 0
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/examples/internal/embedbroker"
	"github.com/holdfast-mqtt/holdfast/outbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// settings are the parsed flags.
type settings struct {
	broker      string
	clientID    string
	group       string
	filter      string
	results     string
	deadLetter  string
	outboxDir   string
	listen      string
	concurrency int
	retries     int
	demo        int
	poisonEvery int
	verbose     bool
}

func parseFlags(args []string, stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("service", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.broker, "broker", "", "broker URL (default: an embedded in-process broker)")
	fs.StringVar(&s.clientID, "client-id", "holdfast-service-1", "MQTT client identifier of this instance (stable: its session is persistent)")
	fs.StringVar(&s.group, "group", "holdfast-service", "shared-subscription group: instances of one group share the orders")
	fs.StringVar(&s.filter, "filter", "holdfast/orders/+", "topic filter of the orders")
	fs.StringVar(&s.results, "results", "holdfast/results", "topic prefix of the results (the order's last topic level is appended)")
	fs.StringVar(&s.deadLetter, "dead-letter", "holdfast/dead-letter", "topic prefix of the orders refused after every retry")
	fs.StringVar(&s.outboxDir, "outbox", "", "durable outbox directory for the results (default: in memory)")
	fs.StringVar(&s.listen, "listen", "127.0.0.1:9464", "address of the metrics endpoint (port 0: any free port)")
	fs.IntVar(&s.concurrency, "concurrency", 4, "orders handled at once (Config.HandlerConcurrency)")
	fs.IntVar(&s.retries, "retries", 2, "retries of a refused order before it is dead-lettered (Config.HandlerRetries)")
	fs.IntVar(&s.demo, "demo", 20, "orders to publish once subscribed (0: none)")
	fs.IntVar(&s.poisonEvery, "poison-every", 7, "every n-th demo order is poison (0: none)")
	fs.BoolVar(&s.verbose, "v", false, "log the client's events to stderr")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	switch {
	case fs.NArg() > 0:
		return s, fmt.Errorf("unexpected arguments %q", fs.Args())
	case s.group == "" || strings.ContainsAny(s.group, "/+#"):
		return s, errors.New("-group must be a non-empty topic level without wildcards")
	case s.concurrency < 1 || s.retries < 0 || s.demo < 0 || s.poisonEvery < 0:
		return s, errors.New("-concurrency must be positive; -retries, -demo and -poison-every not negative")
	}
	return s, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	s, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "service:", err)
		}
		return 2
	}
	level := slog.LevelWarn
	if s.verbose {
		level = slog.LevelInfo
	}
	svc := &service{s: s, out: stdout, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	if err := svc.run(ctx); err != nil {
		fmt.Fprintln(stderr, "service:", err)
		return 1
	}
	return 0
}

// service is one consumer instance.
type service struct {
	s      settings
	log    *slog.Logger
	c      *client.Client
	commit prometheus.Histogram

	outMu sync.Mutex // guards out: handlers print from several goroutines
	out   io.Writer
}

func (svc *service) printf(format string, args ...any) {
	svc.outMu.Lock()
	defer svc.outMu.Unlock()
	fmt.Fprintf(svc.out, format+"\n", args...)
}

func (svc *service) run(ctx context.Context) error {
	if svc.s.broker == "" {
		b, err := embedbroker.Start("127.0.0.1:0")
		if err != nil {
			return err
		}
		defer b.Close() // last: after the client's Close
		svc.s.broker = b.URL()
		svc.printf("service: embedded broker on %s", b.URL())
	}
	shared := "$share/" + svc.s.group + "/" + svc.s.filter
	cfg := client.Config{
		Brokers:            []string{svc.s.broker},
		ClientID:           svc.s.clientID,
		OutboxDir:          svc.s.outboxDir,
		Profile:            outbox.ProfileServer,
		PersistentSession:  true,
		Subscriptions:      []client.Subscription{{Filter: shared, QoS: 1, Handler: svc.handle}},
		HandlerConcurrency: svc.s.concurrency,
		HandlerRetries:     svc.s.retries,
		HandlerBackoff:     50 * time.Millisecond,
		DeadLetter:         svc.deadLetterHandler,
		Logger:             svc.log,
	}
	if cfg.HandlerRetries == 0 {
		cfg.HandlerRetries = -1 // 0 would mean the default
	}
	c, err := client.New(cfg)
	if err != nil {
		return err
	}
	svc.c = c
	defer c.Close(context.Background()) // after a failure; a no-op after the Close below

	// Metrics: a registry of this instance's own, served until the end.
	svc.commit = newCommitHistogram()
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStatsCollector(c.Stats), svc.commit)
	ln, err := net.Listen("tcp", svc.s.listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	svc.printf("service: metrics on http://%s/metrics", ln.Addr())

	// Subscribe waits for the broker's SUBACK (the Config's subscription
	// gave the handler a route from the first connection on).
	// A signal meanwhile is no failure: it goes on to the graceful stop.
	if err := c.Subscribe(ctx, shared, 1, svc.handle); err != nil && ctx.Err() == nil {
		return shutdown(srv, served, fmt.Errorf("subscribe: %w", err))
	} else if err == nil {
		svc.printf("service: subscribed to %s as %s", shared, svc.s.clientID)
		if svc.s.demo > 0 {
			if err := svc.produce(ctx); err != nil && ctx.Err() == nil {
				return shutdown(srv, served, fmt.Errorf("demo orders: %w", err))
			}
		}
	}

	<-ctx.Done()
	svc.printf("service: stopping")
	// Graceful shutdown: Close refuses new publishes, stops the handlers
	// (an order not yet acknowledged is redelivered, to another instance of
	// the group if one is up), waits up to 10s for the results already
	// accepted to be acknowledged, and disconnects.
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closeErr := c.Close(closeCtx)
	st := c.Stats()
	svc.printf("service: stopped: received %d, results acknowledged %d, dead-lettered %d, results left %d",
		st.Received, st.Acked, st.DeadLettered, st.Queued)
	if errors.Is(closeErr, client.ErrNotDrained) && svc.s.outboxDir != "" {
		svc.printf("service: the results left are in %s for the next start", svc.s.outboxDir)
		closeErr = nil
	}
	return shutdown(srv, served, closeErr)
}

// shutdown stops the metrics endpoint and returns err.
func shutdown(srv *http.Server, served <-chan error, err error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := srv.Shutdown(ctx); serr != nil && err == nil {
		err = serr
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// lastLevel returns the last level of topic.
func lastLevel(topic string) string {
	return topic[strings.LastIndexByte(topic, '/')+1:]
}

// errPoison is the handler's refusal of an order it cannot process.
var errPoison = errors.New("cannot process a poison order")

// handle processes one order: it publishes the result and returns once the
// result is durable, so that the order is acknowledged only then.
func (svc *service) handle(ctx context.Context, m client.Message) error {
	if strings.HasPrefix(string(m.Payload), "poison") {
		return errPoison
	}
	result := fmt.Appendf(nil, "handled %s by %s", m.Payload, svc.s.clientID)
	if err := svc.publish(ctx, svc.s.results+"/"+lastLevel(m.Topic), result); err != nil {
		return err // refused: offered again after a backoff
	}
	svc.printf("handled %s: %s", m.Topic, m.Payload)
	return nil
}

// deadLetterHandler receives an order refused after every retry; it is
// acknowledged when this returns.
func (svc *service) deadLetterHandler(ctx context.Context, m client.Message, reason error) {
	payload := fmt.Appendf(nil, "%s (%v)", m.Payload, reason)
	if err := svc.publish(ctx, svc.s.deadLetter+"/"+lastLevel(m.Topic), payload); err != nil {
		svc.log.Error("dead letter not published", "topic", m.Topic, "err", err)
		return
	}
	svc.printf("dead-lettered %s: %s", m.Topic, payload)
}

// publish publishes at QoS 1 and records how long the commit took.
func (svc *service) publish(ctx context.Context, topic string, payload []byte) error {
	start := time.Now()
	_, err := svc.c.Publish(ctx, topic, payload, client.QoS1)
	if err == nil {
		svc.commit.Observe(time.Since(start).Seconds())
	}
	return err
}

// produce publishes the demo orders through a client of its own, as another
// program would, and waits until the broker has them.
func (svc *service) produce(ctx context.Context) error {
	p, err := client.New(client.Config{Brokers: []string{svc.s.broker}, ClientID: svc.s.clientID + "-demo", Logger: svc.log})
	if err != nil {
		return err
	}
	defer p.Close(context.Background())
	prefix := strings.TrimSuffix(strings.TrimSuffix(svc.s.filter, "#"), "+")
	if strings.ContainsAny(prefix, "+#") {
		return fmt.Errorf("-filter %q: the demo needs a filter ending in + or #, with no other wildcard", svc.s.filter)
	}
	for n := 1; n <= svc.s.demo; n++ {
		kind := "order"
		if svc.s.poisonEvery > 0 && n%svc.s.poisonEvery == 0 {
			kind = "poison"
		}
		if _, err := p.Publish(ctx, fmt.Sprintf("%s%d", prefix, n), fmt.Appendf(nil, "%s %d", kind, n), client.QoS1); err != nil {
			return err
		}
	}
	if err := p.Flush(ctx); err != nil {
		return err
	}
	svc.printf("service: %d demo orders published", svc.s.demo)
	return p.Close(ctx)
}
