package client_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "subscriber" {
		os.Exit(childSubscriber()) // a test's child process (child_test.go)
	}
	goleak.VerifyTestMain(m)
}
