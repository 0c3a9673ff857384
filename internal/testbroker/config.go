package testbroker

import "github.com/holdfast-mqtt/holdfast/internal/mosquitto"

// Names inside the broker's directory (see internal/mosquitto).
const (
	dataDirName = mosquitto.DataDirName // persistence_location
	dbName      = mosquitto.DBName
)

// options maps MosquittoOptions onto internal/mosquitto's Options.
func (m *Mosquitto) options(path string, tls *mosquitto.TLS) mosquitto.Options {
	o := m.opts
	return mosquitto.Options{
		Binary:              path,
		Dir:                 m.dir,
		NoPersistence:       o.NoPersistence,
		TLS:                 tls,
		Users:               o.Users,
		ACL:                 o.ACL,
		MaxInflightMessages: o.MaxInflightMessages,
		MaxQueuedMessages:   o.MaxQueuedMessages,
		Debug:               o.Debug,
		Extra:               o.Extra,
	}
}

func (m *Mosquitto) confPath() string { return m.b.ConfPath() }
