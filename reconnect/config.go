package reconnect

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Conn is one established connection, as returned by a [ConnectFunc]. The
// supervisor only watches it: it never closes it, the caller owns it.
type Conn interface {
	// Done is closed when the connection is lost.
	Done() <-chan struct{}
	// Err says why the connection was lost (io.EOF, a keepalive timeout, a
	// reset, ...); it is read once Done is closed and may be nil.
	Err() error
}

// ConnectFunc dials broker (one URL of [Config.Brokers]) and returns once the
// session is up. It must return promptly when ctx is done. An error it
// returns is classified by [IsPermanent] and [Config.IsPermanent]: wrap
// refusals that retrying cannot fix with [Permanent], or return a
// [*RefusedError] carrying the CONNACK code.
type ConnectFunc func(ctx context.Context, broker string) (Conn, error)

// Config configures a [Supervisor]. Zero fields take the documented
// defaults; Brokers and Connect are required.
type Config struct {
	// Brokers are the broker URLs, tried in turn: after a failed attempt the
	// next one is tried (failover), after a lost connection the same one is
	// tried first. Required; no entry may be empty.
	Brokers []string
	// Connect establishes one connection. Required.
	Connect ConnectFunc
	// Policy sets delays and what permanent refusals do.
	Policy Policy
	// OnEvent, if set, receives every transition, in order, from the
	// supervisor's goroutine (or from Close when the supervisor was never
	// started). It must be fast and must not call Close.
	OnEvent func(Event)
	// IsPermanent, if set, is an extra classifier: an attempt error is
	// permanent if the package-level IsPermanent or this function says so.
	// This is where an MQTT library's own refusal errors are mapped.
	IsPermanent func(error) bool
	// AttemptTimeout bounds one call of Connect through its ctx; a timeout
	// is a transient failure. Default 0: no bound beyond Connect's own.
	AttemptTimeout time.Duration
	// Logger receives transitions (Info for connects and losses, Debug for
	// attempts and failures, Error for a stop). Broker URLs are logged with
	// any password redacted. Default: discard.
	Logger *slog.Logger
}

// withDefaults copies cfg, applies defaults and validates it.
func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Brokers) == 0 {
		return cfg, fmt.Errorf("%w: Config.Brokers is empty", ErrInvalidConfig)
	}
	if slices.Contains(cfg.Brokers, "") {
		return cfg, fmt.Errorf("%w: Config.Brokers has an empty entry", ErrInvalidConfig)
	}
	if cfg.Connect == nil {
		return cfg, fmt.Errorf("%w: Config.Connect is nil", ErrInvalidConfig)
	}
	if cfg.AttemptTimeout < 0 {
		return cfg, fmt.Errorf("%w: Config.AttemptTimeout %v is negative", ErrInvalidConfig, cfg.AttemptTimeout)
	}
	p, err := cfg.Policy.withDefaults()
	if err != nil {
		return cfg, err
	}
	cfg.Policy = p
	cfg.Brokers = slices.Clone(cfg.Brokers)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// redact hides a password in a broker URL for logs.
func redact(broker string) string {
	u, err := url.Parse(broker)
	switch {
	case err == nil && u.User != nil:
		return u.Redacted()
	case strings.Contains(broker, "@"):
		return "(broker URL with user info)"
	}
	return broker
}
