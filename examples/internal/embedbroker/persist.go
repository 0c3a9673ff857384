package embedbroker

import (
	badgerdb "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/badger"
)

// addStorage adds mochi's Badger storage hook on dir, sized for a test
// broker: small memtables and value-log files, no compression, no block
// cache. Writes are not synced: the state survives Close and a process
// exit, not a power loss (a graceful restart, as with Mosquitto's
// persistence).
func addStorage(srv *mqtt.Server, dir string) error {
	opts := badgerdb.DefaultOptions(dir).
		WithMemTableSize(8 << 20).
		WithValueThreshold(64 << 10).
		WithNumMemtables(2).
		WithValueLogFileSize(16 << 20).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(0).
		WithNumCompactors(2)
	return srv.AddHook(new(badger.Hook), &badger.Options{Options: &opts})
}
