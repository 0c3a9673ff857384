// Package leakcheck finds goroutines a test left running. It replaces
// go.uber.org/goleak in this repository's tests, so that a module importing
// Holdfast does not get goleak in its go.sum.
//
// Every package with goroutines checks at the end of its tests:
//
//	func TestMain(m *testing.M) {
//		os.Exit(leakcheck.Run(m))
//	}
//
// and a single test can check that it left nothing behind:
//
//	defer leakcheck.VerifyNone(t, leakcheck.IgnoreCurrent())
//
// # Guarantees
//
//   - A goroutine is reported when it is neither the caller, nor one that
//     existed when the check's baseline was taken (Run: before the tests;
//     IgnoreCurrent: when the option was made), nor ignored by a filter.
//   - Goroutines that wind down after the tests are given time: the check
//     retries with a growing pause (1ms to 100ms) until nothing is left or
//     the timeout (default 2s) passes, and reports what is left then.
//   - The default filters ignore what the Go runtime and the testing package
//     run in the background (as goleak does): the os/signal receiver, the
//     goroutines of signal.Notify and of runtime/trace, the testing package's
//     waiting goroutines, and goroutines in a system call at the top of a
//     cgo callback. IgnoreTopFunction and IgnoreAnyFunction add more.
//
// # Caveats
//
//   - A goroutine that exists at the baseline and ends is not a leak; one
//     that ends and is replaced by a new one with another ID is checked.
//   - The check parses runtime.Stack(all=true): it sees user goroutines only,
//     never the runtime's own (GC workers and the like).
package leakcheck
