// Package mosquitto runs Mosquitto as a child process on a loopback port,
// with its own configuration file and persistence directory, for tests and
// for programs such as the benchmark command. It does not import the testing
// package: internal/testbroker is a thin testing.TB wrapper over it.
//
//	b, err := mosquitto.Start(mosquitto.Options{Quiet: true})
//	if err != nil { ... }
//	defer b.Close()
//	opts.AddBroker(b.URL())
//	...
//	err = b.Restart() // graceful: persistent sessions survive
//
// # Guarantees
//
//   - Start returns only once the broker has logged that it is running and
//     accepts TCP connections on its port (a bounded wait, 10s). When the
//     port was chosen automatically and turns out to be taken, the first
//     Start tries up to three fresh ports.
//   - Restart, Stop and Start keep the port and the directory. Stop sends
//     SIGTERM and waits: the persistence database (on by default) is saved,
//     so persistent sessions and their queued messages survive. Kill sends
//     SIGKILL: nothing is saved.
//   - When the process runs as root, the configuration says "user root", so
//     Mosquitto does not drop to a user that cannot write the directory.
//   - Everything the broker logs is kept in memory (at least the last 8 MiB;
//     see Log and LogTail). Each run starts with a line beginning
//     "==== testbroker:". By default that is everything but the debug line
//     Mosquitto writes for every packet; Options.Debug adds those.
//   - On Linux the broker is killed by the kernel if this process dies
//     without calling Close (Pdeathsig).
//
// # Caveats
//
//   - FreePort closes the port it found: another process may take it before
//     the broker binds it; a Start after the first reuses the same port and
//     fails with ErrBind if it was taken meanwhile.
//   - Mosquitto exits with status 0 even when it could not save its
//     database; Stop detects this from the log (ErrNotSaved).
//   - $HOLDFAST_MOSQUITTO may name the binary; otherwise PATH and the usual
//     sbin directories are searched (Debian installs it in /usr/sbin).
package mosquitto
