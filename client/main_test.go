package client_test

import (
	"os"
	"testing"

	"github.com/holdfast-mqtt/holdfast/internal/leakcheck"
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "subscriber" {
		os.Exit(childSubscriber()) // a test's child process (child_test.go)
	}
	os.Exit(leakcheck.Run(m))
}
