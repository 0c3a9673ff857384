package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/holdfast-mqtt/holdfast/outbox"
)

func Example() {
	dir, _ := os.MkdirTemp("", "outbox-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	q, err := outbox.Open(dir, outbox.Options{MaxRecords: 1000})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range []string{"one", "two", "three"} {
		if _, err := q.Append(ctx, &outbox.Record{Topic: "demo", QoS: 1, Payload: []byte(p)}); err != nil {
			fmt.Println(err)
		}
	}
	// A dispatcher reads in order, marks what it sends, removes what is acknowledged.
	recs, _ := q.Read(0, 10, nil)
	for _, r := range recs {
		fmt.Println(r.Seq, string(r.Payload))
	}
	_ = q.SetState(ctx, recs[0].Seq, 42, outbox.PhaseSent)
	_ = q.Remove(recs[1].Seq)
	_ = q.Close()

	// Everything not removed is there after a restart, with its state.
	q, _ = outbox.Open(dir, outbox.Options{})
	defer q.Close()
	recs, _ = q.Read(0, 10, nil)
	for _, r := range recs {
		fmt.Println(r.Seq, string(r.Payload), r.Phase, r.PacketID)
	}
	// Output:
	// 1 one
	// 2 two
	// 3 three
	// 1 one sent 42
	// 3 three queued 0
}

func ExampleOptions_dropOldest() {
	q := outbox.NewMemory(outbox.Options{
		MaxRecords: 2,
		Overflow:   outbox.OverflowDropOldest,
		OnDrop: func(seq uint64, reason error) {
			fmt.Println("dropped", seq, errors.Is(reason, outbox.ErrDropped))
		},
	})
	defer q.Close()
	for i := 0; i < 3; i++ {
		_, _ = q.Append(context.Background(), &outbox.Record{Topic: "t"})
	}
	fmt.Println(q.Stats().Len, q.Stats().Dropped)
	// Output:
	// dropped 1 true
	// 2 1
}

func ExampleOpen_errors() {
	dir, _ := os.MkdirTemp("", "outbox-example")
	defer os.RemoveAll(dir)
	q, _ := outbox.Open(dir, outbox.Options{})
	defer q.Close()

	_, err := outbox.Open(dir, outbox.Options{})
	fmt.Println(errors.Is(err, outbox.ErrLocked))
	// Output:
	// true
}
