package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-mqtt/holdfast/client"
	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// Metric names, in the Prometheus text format served on /metrics.
const (
	mOutboxMessages = "holdfast_outbox_messages"
	mOutboxBytes    = "holdfast_outbox_bytes"
	mOutboxOldest   = "holdfast_outbox_oldest_age_seconds"
	mInflight       = "holdfast_inflight_messages"
	mAcknowledged   = "holdfast_acknowledged_total"
	mDropped        = "holdfast_dropped_total"
	mExpired        = "holdfast_expired_total"
	mReconnects     = "holdfast_reconnects_total"
	mState          = "holdfast_connection_state"
	mReceived       = "holdfast_received_total"
	mRefusals       = "holdfast_handler_refusals_total"
	mDeadLettered   = "holdfast_dead_lettered_total"
	mCommit         = "holdfast_publish_commit_seconds"
)

// states are the values of the state label of holdfast_connection_state.
var states = []reconnect.State{reconnect.Disconnected, reconnect.Connecting, reconnect.Connected, reconnect.Stopped, reconnect.Closed}

// statsCollector turns a client's Stats snapshot into metrics at every
// scrape: no counter of its own can drift from the client's.
type statsCollector struct {
	stats func() client.Stats
	descs map[string]*prometheus.Desc
}

func newStatsCollector(stats func() client.Stats) *statsCollector {
	help := map[string]string{
		mOutboxMessages: "Messages in the outbox, in flight included.",
		mOutboxBytes:    "Bytes of topic and payload in the outbox.",
		mOutboxOldest:   "Age of the oldest message in the outbox; 0 when it is empty.",
		mInflight:       "Messages sent and not yet acknowledged by the broker.",
		mAcknowledged:   "Messages the broker acknowledged (PUBACK, PUBCOMP).",
		mDropped:        "Messages dropped unsent by the outbox's overflow policy.",
		mExpired:        "Messages dropped unsent by their TTL.",
		mReconnects:     "Connections after the first.",
		mReceived:       "Inbound messages handed to handlers.",
		mRefusals:       "Times a handler refused a message (returned an error).",
		mDeadLettered:   "Inbound messages handed to the dead-letter callback, then acknowledged.",
	}
	k := &statsCollector{stats: stats, descs: map[string]*prometheus.Desc{}}
	for name, h := range help {
		k.descs[name] = prometheus.NewDesc(name, h, nil, nil)
	}
	k.descs[mState] = prometheus.NewDesc(mState, "1 for the client's connection state, 0 for the others.", []string{"state"}, nil)
	return k
}

func (k *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range k.descs {
		ch <- d
	}
}

func (k *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := k.stats()
	gauge := func(name string, v float64) {
		ch <- prometheus.MustNewConstMetric(k.descs[name], prometheus.GaugeValue, v)
	}
	counter := func(name string, v uint64) {
		ch <- prometheus.MustNewConstMetric(k.descs[name], prometheus.CounterValue, float64(v))
	}
	gauge(mOutboxMessages, float64(st.Queued))
	gauge(mOutboxBytes, float64(st.QueuedBytes))
	gauge(mOutboxOldest, st.OldestAge.Seconds())
	gauge(mInflight, float64(st.Inflight))
	counter(mAcknowledged, st.Acked)
	counter(mDropped, st.Dropped)
	counter(mExpired, st.Expired)
	counter(mReconnects, st.Reconnects)
	counter(mReceived, st.Received)
	counter(mRefusals, st.Refusals)
	counter(mDeadLettered, st.DeadLettered)
	for _, s := range states {
		v := 0.0
		if st.State == s {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(k.descs[mState], prometheus.GaugeValue, v, s.String())
	}
}

// newCommitHistogram is the latency of Publish: from the call to the
// message being durable in the outbox (and so accepted).
func newCommitHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    mCommit,
		Help:    "Time Publish took to make a message durable in the outbox.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100µs .. 3.3s
	})
}
