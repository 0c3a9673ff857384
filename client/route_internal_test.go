package client

import (
	"strings"
	"testing"
)

// TestRouteMatchesSharedByInnerFilter: a "$share/<group>/<filter>"
// subscription's messages carry the topic as published, so its route
// matches by the inner filter.
func TestRouteMatchesSharedByInnerFilter(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"$share/g/a/+", "a/b", true},
		{"$share/g/a/+", "a/b/c", false},
		{"$share/g/#", "x/y", true},
		{"$share/g/#", "$SYS/x", false},
		{"$share/g/a/b", "$share/g/a/b", false},
		{"$share/g/+/b", "a/b", true},
		{"a/#", "a", true},
		{"+/+", "a/b", true},
		{"$shared/x", "$shared/x", true},
	} {
		if got := newRoute(tc.filter, nil).match(strings.Split(tc.topic, "/")); got != tc.want {
			t.Errorf("%q matching %q: %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}
