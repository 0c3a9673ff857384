package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// bufSize is the largest chunk a pump reads at once.
const bufSize = 32 * 1024

// link is one proxied connection: a client socket and its upstream socket.
type link struct {
	client   *net.TCPConn
	upstream *net.TCPConn

	done chan struct{} // closed when the link is torn down (reset or closed)
	once sync.Once
}

// reset tears the link down with a RST to both peers. It reports whether this
// call did it (false if the link was already torn down).
func (l *link) reset() bool {
	did := false
	l.once.Do(func() {
		did = true
		close(l.done)
		resetConn(l.client)
		resetConn(l.upstream)
	})
	return did
}

// close tears the link down with an orderly close of both sockets.
func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		_ = l.client.Close()
		_ = l.upstream.Close()
	})
}

// pump copies src to dst until src ends or the link is torn down, applying the
// Proxy's black hole, latency and bandwidth settings to every chunk. An end of
// stream from src is passed on as a half-close of dst; a read error (such as a
// reset) resets the whole link.
func (p *Proxy) pump(l *link, src, dst *net.TCPConn, count *atomic.Uint64) {
	buf := make([]byte, bufSize)
	var pace time.Time // bandwidth pacing: when the next slice may be written
	for {
		n, err := src.Read(buf)
		readAt := time.Now()
		if n > 0 {
			if !p.hold(l) || !p.delay(l, readAt) {
				return
			}
			if !p.write(l, dst, buf[:n], count, &pace) {
				return
			}
		}
		if err != nil {
			if !p.hold(l) { // a peer's FIN or RST is held back by a black hole too
				return
			}
			if errors.Is(err, io.EOF) {
				_ = dst.CloseWrite()
				return
			}
			l.reset()
			return
		}
	}
}

// hold waits while the Proxy is black-holed. It reports false if the link
// was torn down meanwhile.
func (p *Proxy) hold(l *link) bool {
	for {
		p.mu.Lock()
		on, off := p.blackhole, p.bhOff
		p.mu.Unlock()
		if !on {
			return true
		}
		select {
		case <-off:
		case <-l.done:
			return false
		}
	}
}

// delay waits until readAt plus the configured latency. It reports false if
// the link was torn down meanwhile.
func (p *Proxy) delay(l *link, readAt time.Time) bool {
	p.mu.Lock()
	d := p.latency
	p.mu.Unlock()
	return waitUntil(l.done, readAt.Add(d))
}

// write writes b to dst, throttled to the configured bandwidth. It reports
// false if the write failed or the link was torn down.
func (p *Proxy) write(l *link, dst *net.TCPConn, b []byte, count *atomic.Uint64, pace *time.Time) bool {
	for len(b) > 0 {
		p.mu.Lock()
		bps := p.bandwidth
		p.mu.Unlock()

		chunk := b
		if bps > 0 {
			limit := bps / 20 // a twentieth of a second's worth
			if limit < 1 {
				limit = 1
			}
			if len(chunk) > limit {
				chunk = chunk[:limit]
			}
			now := time.Now()
			if pace.Before(now) {
				*pace = now
			}
			if !waitUntil(l.done, *pace) {
				return false
			}
			*pace = pace.Add(time.Duration(len(chunk)) * time.Second / time.Duration(bps))
		}
		n, err := dst.Write(chunk)
		count.Add(uint64(n))
		if err != nil {
			l.reset()
			return false
		}
		b = b[n:]
	}
	return true
}

// waitUntil blocks until t or until done is closed; it reports false in the
// latter case.
func waitUntil(done <-chan struct{}, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-done:
		return false
	}
}
