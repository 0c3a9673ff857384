package faultproxy

import "time"

// Cut resets every live connection: the client and the target each receive a
// TCP RST (SO_LINGER 0). New connections are forwarded as usual.
func (p *Proxy) Cut() {
	p.mu.Lock()
	live := p.snapshotLocked()
	p.mu.Unlock()
	p.cutLinks(live)
}

func (p *Proxy) cutLinks(live []*link) {
	for _, l := range live {
		if l.reset() {
			p.stats.cuts.Add(1)
		}
	}
}

// SetRefuse starts (on) or ends (off) an outage. While it lasts, new
// connections are accepted and reset at once (counted in Stats.Refused), and
// starting it cuts every live connection. It cancels a pending Outage timer.
func (p *Proxy) SetRefuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.outageGen++
	var live []*link
	if on {
		live = p.snapshotLocked()
	}
	p.mu.Unlock()
	p.cutLinks(live)
}

// Outage cuts every live connection and refuses new ones for d, then accepts
// again. It does not block: a timer owned by the Proxy ends the outage, unless
// SetRefuse or another Outage is called first (the latest call wins). Close
// cancels the timer.
func (p *Proxy) Outage(d time.Duration) {
	p.mu.Lock()
	p.refuse = true
	p.outageGen++
	gen := p.outageGen
	live := p.snapshotLocked()
	p.goLocked(func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			p.mu.Lock()
			if p.outageGen == gen {
				p.refuse = false
			}
			p.mu.Unlock()
		case <-p.ctx.Done():
		}
	})
	p.mu.Unlock()
	p.cutLinks(live)
}

// SetBlackhole starts (on) or ends (off) a black hole. While it lasts, the
// sockets stay open but nothing is forwarded in either direction: bytes read
// and any end of stream are held back and delivered, in order, when it ends.
// Peers notice only through their own timeouts (MQTT keepalive).
func (p *Proxy) SetBlackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && !p.blackhole:
		p.blackhole = true
		p.bhOff = make(chan struct{})
	case !on && p.blackhole:
		p.blackhole = false
		close(p.bhOff)
	}
}

// SetLatency adds d of one-way delay to every chunk forwarded, in each
// direction (so a round trip gains 2*d). 0 removes it. It applies to chunks
// read after the call.
func (p *Proxy) SetLatency(d time.Duration) {
	if d < 0 {
		d = 0
	}
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// SetBandwidth limits each connection, in each direction, to about
// bytesPerSec bytes per second. 0 (or less) removes the limit.
func (p *Proxy) SetBandwidth(bytesPerSec int) {
	if bytesPerSec < 0 {
		bytesPerSec = 0
	}
	p.mu.Lock()
	p.bandwidth = bytesPerSec
	p.mu.Unlock()
}
