// Command hfbench measures Holdfast against bare paho.mqtt.golang on one
// Mosquitto broker that it starts itself on loopback, in one run, and
// reports every figure as a ratio to bare paho measured in the same run
// (issue 6, "Performance: durable and still as fast as bare paho").
//
//	go run ./internal/cmd/hfbench                      # the full run, about 3 minutes on 2 cores
//	go run ./internal/cmd/hfbench -n 5000 -rss-n 50000 # a quick look
//	go run ./internal/cmd/hfbench -run 'hf-q1-group' -cpuprofile cpu.out
//
// # What it measures
//
// Throughput cases publish 256-byte payloads (-size) from 1 and 16
// goroutines (-goroutines). Each goroutine publishes its share without
// waiting per message; the figure is messages / (time from the first
// Publish to the last broker acknowledgement):
//
//   - paho-mem: bare paho, QoS 1, its in-memory store; tokens are kept and
//     waited for at the end.
//   - paho-file: bare paho, QoS 1, its FileStore (-n/5 messages: it is slow).
//   - paho-q0: bare paho, QoS 0 (reference).
//   - hf-q1 and hf-q2: Holdfast, QoS 1 and 2, in each durability mode
//     (group = outbox.GroupCommit, the default: fsynced before Publish
//     returns; each = SyncEach; nosync = NoSync). Publish returns once the
//     message is as durable as the mode says, then Client.Flush waits for
//     every acknowledgement. Slow modes use fewer messages (see -n).
//
// Every case runs on its own connection (a fresh client identifier) and
// outbox directory, after a warm-up of min(1000, count/10) messages. Each
// case also records the CPU seconds of this process, of the broker and of
// the rest of the machine (other load skews every figure), and the heap
// allocations per message of this process.
//
// Then:
//
//   - drain: Holdfast builds a backlog of -backlog messages (default
//     100,000) from 16 goroutines while the broker is stopped, then the
//     broker is started again. The drain rate is backlog / (time from the
//     connection coming up to Flush returning). It runs twice: alone (the
//     figure compared with paho-mem-q1-g1, bare paho's live QoS 1
//     throughput), and with a QoS 1 subscriber whose persistent session
//     survives the broker's restart, which checks that every message
//     arrived and that first copies arrived in the order Publish accepted
//     them; the rate of that second drain is compared with bare paho
//     publishing live to the same kind of subscriber (paho-mem-sub-q1-g1).
//   - reconnect: a fault proxy refuses connections until the supervisor has
//     failed three attempts (default backoff policy, StableAfter 300ms so
//     that every trial starts from the initial interval), one message is
//     published, and the proxy accepts again at a point inside the current
//     backoff wait. Latency is the time from that moment to the message's
//     acknowledgement; the target is latency <= the current backoff
//     interval + 100ms (-reconnect-trials trials).
//   - rss: a child process of this binary (device profile, broker
//     unreachable, default durability) publishes -rss-n messages (default
//     1,000,000) from -rss-goroutines goroutines, closes the client,
//     reopens it on the same outbox (the restart path reads the backlog's
//     index), and reports the process's peak RSS (VmHWM in
//     /proc/self/status: the whole process), with RssAnon and RssFile.
//   - fsync: the latency of one 256-byte append + fsync in the work
//     directory's file system, as a reference for the durable cases.
//
// It prints a table (case, msg/s, ratio to bare paho with its memory store
// and with its FileStore at the same goroutine count, target, pass/miss),
// writes the results as JSON (-json) and a bar chart as SVG (-svg).
//
// # Flags
//
//	-n N                 most messages per case (default 50000); paho-file,
//	                     hf SyncEach and hf group commit with 1 goroutine
//	                     use N/5 (SyncEach N/10), hf QoS 2 durable N/10
//	-case-seconds S      size each case to last about S seconds at its
//	                     warm-up's rate, within [500, its count] (default
//	                     2.5; 0: the fixed counts above)
//	-size B              payload bytes (default 256)
//	-goroutines LIST     publishing goroutines per case (default "1,16")
//	-runs K              repeat every throughput case K times, report the
//	                     median (default 1)
//	-run REGEXP          only cases whose name matches (also "drain",
//	                     "reconnect", "rss", "fsync")
//	-backlog N           drain backlog size (default 100000)
//	-reconnect-trials N  reconnect trials (default 5)
//	-rss-n N             messages in the RSS child's backlog (default 1000000)
//	-rss-goroutines N    its publishing goroutines (default 128)
//	-rss-drain           it also drains the backlog to the broker (slow)
//	-rss-gomemlimit L    run it with GOMEMLIMIT=L (for example 40MiB)
//	-rss-memprofile P    it writes heap profiles P-build.pprof, P-reopen.pprof
//	-max-payload B       Config.MaxPayload of every Holdfast client (0: default)
//	-dir DIR             where outboxes, stores and the broker's files go
//	                     (default: a new temp directory, removed at the end)
//	-json PATH           results as JSON (default docs/bench/results.json;
//	                     "" to skip)
//	-svg PATH            chart (default docs/bench/chart.svg; "" to skip)
//	-render PATH         measure nothing: print the table of a results JSON
//	                     and write -svg from it
//	-cpuprofile PATH     CPU profile of the whole run
//	-cpuprofile-dir DIR  one CPU profile per measured interval, DIR/CASE.pprof
//	-memprofile PATH     heap profile at the end of the run
//	-v                   progress on stderr
//
// Mosquitto 2.0 must be installed (Debian: apt-get install mosquitto); the
// binary is found as internal/mosquitto finds it ($HOLDFAST_MOSQUITTO, PATH,
// /usr/sbin). The broker logs little, saves its persistence database only
// when it stops, and keeps max_inflight_messages at its default (20), so
// Holdfast's QoS 2 window is 20.
//
// # Caveats
//
// The broker, this process and the RSS child share the machine: on 2 cores
// the figures are CPU-bound, and anything else running skews them (the
// table's "other cores" column says how much); use -runs 3 on a quiet
// machine for steadier medians. The durable figures depend on the disk's
// flush latency, measured by the fsync case. The client-side figures (testing.B) are in
// client/bench_test.go, for benchstat comparisons across commits.
package main
