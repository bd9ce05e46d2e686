// A minimal Mochi MQTT broker (github.com/mochi-mqtt/server/v2 v2.7.9) with one of its storage hooks, measured
// beside Mosquitto by scripts/studies/broker_crash.py; docs/reliability.md ("MQTT broker crash") has the figures
// and the choice. Any client is allowed (auth.AllowHook), as with the stack's Mosquitto.
//
//	go build -o ../../.deps/mochi/mochi-broker .      # from scripts/studies/mochi/ (.deps/ is git-ignored)
//	mochi-broker -port 1883 -data /var/lib/mochi [-store badger|pebble|bolt] [-sync]
//
// What v2.7.9 persists, and when (read from server.go and hooks/storage/*):
//   - processPublish writes the PUBACK to the publisher's socket first, then fans the message out
//     (publishToSubscribers -> publishToClient -> Inflight.Set + OnQosPublish -> the store's write). The write
//     follows the PUBACK by one store write: a crash in that gap loses a message the publisher holds a PUBACK
//     for, whichever hook is used. A message queued for an offline session is an inflight entry with a packet id:
//     at most MaximumInflight (a uint16, <= 65,535) per session; beyond it the message is dropped after the PUBACK.
//   - badger (default): each event is a badger transaction; Update returns once the entry is in the memtable's
//     memory-mapped write-ahead log, so it survives a process crash (SIGKILL) without an fsync; -sync sets
//     SyncWrites (fsync per write) for a machine crash too.
//   - pebble: without -sync (pebble.NoSync) the write-ahead log is flushed by a background goroutine, so a
//     SIGKILL can lose the latest writes; -sync (pebble.Sync) waits for the fsync of each write.
//   - bolt: OnQosPublish stores the message without its packet id (the badger and pebble hooks store it); after a
//     restart every restored message has packet id 0 and resending it fails ("protocol violation: missing packet
//     id"), so the session cannot resume. Kept selectable only to show that.
package main

import (
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	pebbledb "github.com/cockroachdb/pebble"
	badgerdb "github.com/dgraph-io/badger/v4"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/badger"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/hooks/storage/pebble"
	"github.com/mochi-mqtt/server/v2/listeners"
	"go.etcd.io/bbolt"
)

func main() {
	host := flag.String("host", "127.0.0.1", "listener address")
	port := flag.String("port", "1883", "listener port")
	data := flag.String("data", "mochi-data", "data folder")
	store := flag.String("store", "badger", "storage hook: badger, pebble or bolt")
	sync := flag.Bool("sync", false, "fsync every write (survives a machine crash, not only a process crash)")
	maxInflight := flag.Uint("max-inflight", 65535, "messages held per session (queued + in flight), at most 65535")
	receiveMax := flag.Uint("receive-maximum", 65535, "QoS 1/2 messages a client may have unacknowledged towards the broker")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()

	level := new(slog.LevelVar)
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		slog.Error("bad -log-level", "error", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	fail := func(what string, err error) {
		logger.Error(what, "error", err)
		os.Exit(1)
	}
	if err := os.MkdirAll(*data, 0o755); err != nil {
		fail("cannot create the data folder", err)
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumInflight = uint16(min(*maxInflight, 65535))
	caps.ReceiveMaximum = uint16(min(*receiveMax, 65535))
	caps.MaximumPacketSize = 1 << 20 // as mosquitto.conf's max_packet_size
	server := mqtt.New(&mqtt.Options{Capabilities: caps, Logger: logger})

	if err := server.AddHook(new(auth.AllowHook), nil); err != nil {
		fail("auth hook", err)
	}
	var err error
	switch *store {
	case "badger":
		path := filepath.Join(*data, "badger")
		options := badgerdb.DefaultOptions(path).WithSyncWrites(*sync).WithMemTableSize(16 << 20).
			WithBlockCacheSize(32 << 20).WithNumVersionsToKeep(1)
		err = server.AddHook(new(badger.Hook), &badger.Options{Path: path, Options: &options})
	case "pebble":
		mode := pebble.NoSync
		if *sync {
			mode = pebble.Sync
		}
		err = server.AddHook(new(pebble.Hook), &pebble.Options{
			Path: filepath.Join(*data, "pebble"), Mode: mode, Options: &pebbledb.Options{},
		})
	case "bolt":
		err = server.AddHook(new(bolt.Hook), &bolt.Options{
			Path:    filepath.Join(*data, "mochi.bolt"),
			Options: &bbolt.Options{Timeout: 2 * time.Second, NoSync: !*sync, FreelistType: bbolt.FreelistMapType},
		})
	default:
		logger.Error("unknown -store", "store", *store)
		os.Exit(2)
	}
	if err != nil {
		fail("storage hook "+*store, err)
	}
	if err := server.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: *host + ":" + *port})); err != nil {
		fail("listener", err)
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		if err := server.Serve(); err != nil {
			fail("serve", err)
		}
	}()
	logger.Warn("mochi broker up", "address", *host+":"+*port, "store", *store, "data", *data, "sync", *sync,
		"max_inflight", caps.MaximumInflight)
	<-stop
	_ = server.Close()
}
