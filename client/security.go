package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// validateTLS checks the TLS fields of the Config (see Config.TLS,
// TLSFiles, GetTLSConfig, InsecureSkipVerify), reading TLSFiles once.
func (c *Config) validateTLS() error {
	if c.GetTLSConfig != nil && (c.TLS != nil || c.TLSFiles != nil) {
		return fmt.Errorf("%w: GetTLSConfig is exclusive with TLS and TLSFiles", ErrInvalidConfig)
	}
	if c.TLS != nil && c.TLS.InsecureSkipVerify && !c.InsecureSkipVerify {
		return fmt.Errorf("%w: TLS.InsecureSkipVerify turns the verification of the broker's certificate off: "+
			"set Config.InsecureSkipVerify too if that is really meant (tests only)", ErrInvalidConfig)
	}
	if f := c.TLSFiles; f != nil {
		if f.CAFile == "" && f.CertFile == "" && f.KeyFile == "" {
			return fmt.Errorf("%w: TLSFiles names no file", ErrInvalidConfig)
		}
		if (f.CertFile == "") != (f.KeyFile == "") {
			return fmt.Errorf("%w: TLSFiles needs both CertFile and KeyFile, or neither", ErrInvalidConfig)
		}
		if _, err := f.apply(&tls.Config{}); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	return nil
}

// apply reads the files and returns tc with their CA pool and certificate.
// Its errors name the files, never their content.
func (f *TLSFiles) apply(tc *tls.Config) (*tls.Config, error) {
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("holdfast: TLSFiles.CAFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("holdfast: TLSFiles.CAFile %s: no PEM certificate", f.CAFile)
		}
		tc.RootCAs = pool
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			// crypto/tls's messages say what is wrong without quoting the key.
			return nil, fmt.Errorf("holdfast: TLSFiles.CertFile %s, KeyFile %s: %w", f.CertFile, f.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// tlsNeeded reports whether a broker scheme runs over TLS.
func tlsNeeded(scheme string) bool {
	switch scheme {
	case "ssl", "tls", "mqtts", "tcps", "mqtt+ssl", "wss":
		return true
	}
	return false
}

// tlsFor returns the TLS configuration of one attempt at broker u: from
// GetTLSConfig, or Config.TLS with TLSFiles read now; verified unless
// Config.InsecureSkipVerify, with ServerName defaulting to u's host name.
func (c *Config) tlsFor(ctx context.Context, broker string, u *url.URL) (*tls.Config, error) {
	var tc *tls.Config
	switch {
	case c.GetTLSConfig != nil:
		got, err := c.GetTLSConfig(ctx, broker)
		if err != nil {
			return nil, fmt.Errorf("holdfast: GetTLSConfig: %w", err)
		}
		tc = got.Clone() // nil for nil
		if tc != nil && tc.InsecureSkipVerify && !c.InsecureSkipVerify {
			return nil, reconnect.Permanent(fmt.Errorf("%w: GetTLSConfig returned a configuration with InsecureSkipVerify, "+
				"and Config.InsecureSkipVerify is not set", ErrInvalidConfig))
		}
	default:
		tc = c.TLS.Clone()
	}
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if c.TLSFiles != nil {
		var err error
		if tc, err = c.TLSFiles.apply(tc); err != nil {
			return nil, err
		}
	}
	if c.InsecureSkipVerify {
		tc.InsecureSkipVerify = true
	}
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	return tc, nil
}

// redactURL returns broker with the password of its user information
// replaced, for logs, errors and Stats.
func redactURL(broker string) string {
	u, err := url.Parse(broker)
	switch {
	case err == nil && u.User != nil:
		return u.Redacted()
	case err != nil && strings.Contains(broker, "@"):
		return "(broker URL with user information)"
	}
	return broker
}

// withoutUser returns broker without its user information.
func withoutUser(broker string) string {
	u, err := url.Parse(broker)
	if err != nil || u.User == nil {
		return broker
	}
	u.User = nil
	return u.String()
}

// redactErr drops the URL that a *url.Error quotes (it may hold a
// password), keeping what is wrong with it.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %s: %w", ue.Op, redactURL(ue.URL), ue.Err)
	}
	return err
}
