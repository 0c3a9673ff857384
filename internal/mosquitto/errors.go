package mosquitto

import "errors"

var (
	// ErrNotInstalled is returned when the mosquitto binary (or
	// mosquitto_passwd, needed for Options.Users) cannot be found.
	ErrNotInstalled = errors.New("mosquitto: not installed")

	// ErrBind is returned when the broker could not listen on its port
	// because the address is already in use.
	ErrBind = errors.New("mosquitto: address already in use")

	// ErrRunning is returned by Start when the broker is already running.
	ErrRunning = errors.New("mosquitto: already running")

	// ErrNotReady is returned by Start when the broker exited, or did not
	// accept connections within the ready timeout.
	ErrNotReady = errors.New("mosquitto: not ready")

	// ErrStop is returned by Stop when the broker exited with a failure
	// status or had to be killed after not exiting in time.
	ErrStop = errors.New("mosquitto: unclean stop")

	// ErrNotSaved is returned by Stop when the broker logged that it could
	// not save its persistence database.
	ErrNotSaved = errors.New("mosquitto could not save its persistence database")

	// ErrClosed is returned by the methods of a Broker after Close.
	ErrClosed = errors.New("mosquitto: closed")

	// ErrInvalidOptions is returned by New for options that cannot work.
	ErrInvalidOptions = errors.New("mosquitto: invalid options")
)
