package reconnect_test

import (
	"context"
	"fmt"
	"time"

	"github.com/holdfast-mqtt/holdfast/reconnect"
)

// exampleConn stands for a real connection (a paho client, say).
type exampleConn struct{ done chan struct{} }

func (c exampleConn) Done() <-chan struct{} { return c.done }
func (c exampleConn) Err() error            { return nil }

func Example() {
	s, err := reconnect.New(reconnect.Config{
		Brokers: []string{"tcp://primary:1883", "tcp://backup:1883"},
		Connect: func(ctx context.Context, broker string) (reconnect.Conn, error) {
			if broker == "tcp://primary:1883" {
				return nil, fmt.Errorf("dial %s: connection refused", broker)
			}
			return exampleConn{done: make(chan struct{})}, nil
		},
		Policy: reconnect.Policy{InitialInterval: 10 * time.Millisecond},
		OnEvent: func(ev reconnect.Event) {
			fmt.Printf("%v -> %v on %s (attempt %d, err: %v)\n", ev.Prev, ev.State, ev.Broker, ev.Attempt, ev.Err)
		},
	})
	if err != nil {
		panic(err)
	}
	s.Start()
	if _, err := s.AwaitConnected(context.Background()); err != nil {
		panic(err)
	}
	_ = s.Close() // the caller still owns the Conn
	// Output:
	// Disconnected -> Connecting on tcp://primary:1883 (attempt 1, err: <nil>)
	// Connecting -> Disconnected on tcp://primary:1883 (attempt 1, err: dial tcp://primary:1883: connection refused)
	// Disconnected -> Connecting on tcp://backup:1883 (attempt 2, err: <nil>)
	// Connecting -> Connected on tcp://backup:1883 (attempt 2, err: <nil>)
	// Connected -> Closed on tcp://backup:1883 (attempt 0, err: reconnect: supervisor closed)
}
