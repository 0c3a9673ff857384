package embedbroker

import "errors"

// ErrStart is wrapped by the errors Start returns when the broker cannot start.
var ErrStart = errors.New("embedbroker: cannot start broker")
