package faultproxy

import "errors"

// ErrInvalidTarget is returned by New when the target is not a "host:port" address.
var ErrInvalidTarget = errors.New("faultproxy: invalid target address")
