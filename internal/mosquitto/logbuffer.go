package mosquitto

import (
	"sync"
)

// The broker log kept in memory: at least the last maxLogBytes, at most
// trimSlack more. Older output is dropped in one move once the slack is
// used up, so a busy broker's log costs a copy per trimSlack bytes written,
// not per write (a copy of 8 MiB for each line would slow the broker down:
// it blocks on its stderr while the copy runs).
const (
	maxLogBytes = 8 << 20
	trimSlack   = 2 << 20
)

// logBuffer collects a child process's output. Offsets are absolute byte
// counts since creation, so they stay valid when old output is dropped.
type logBuffer struct {
	mu    sync.Mutex // guards buf and total
	buf   []byte     // the most recent output, at most maxLogBytes+trimSlack
	total int64      // bytes ever written
}

func newLogBuffer() *logBuffer { return &logBuffer{} }

// Write appends p; it never fails.
func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	l.total += int64(len(p))
	if len(l.buf) > maxLogBytes+trimSlack {
		l.buf = append(l.buf[:0], l.buf[len(l.buf)-maxLogBytes:]...)
	}
	return len(p), nil
}

// offset returns the absolute offset of the next byte to be written.
func (l *logBuffer) offset() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// since returns the output written from absolute offset off on (or as much
// of it as is still kept).
func (l *logBuffer) since(off int64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := l.total - int64(len(l.buf)) // absolute offset of buf[0]
	if off < first {
		off = first
	}
	return string(l.buf[off-first:])
}

// tail returns at most the last n bytes.
func (l *logBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > n {
		return string(l.buf[len(l.buf)-n:])
	}
	return string(l.buf)
}

// String returns all the output kept.
func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf)
}
