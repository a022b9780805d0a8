package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cgpool/cgpool/pool"
	"github.com/coreos/go-systemd/v22/daemon"
)

// heartbeat keeps systemd informed from serve's main loop: a STATUS= line
// (each pool's workers busy and idle, and its queue depth, as `systemctl
// status` shows it) when it changes, and WATCHDOG=1 when the unit has
// WatchdogSec=. Both are sent from the main loop, after reading every
// pool's statistics (which takes each pool's lock), so a wedged loop or a
// deadlocked pool stops the pings and systemd restarts the service.
type heartbeat struct {
	sup      *pool.Supervisor
	log      *slog.Logger
	ticker   *time.Ticker
	watchdog bool
	last     string
	wedge    chan os.Signal
}

// statusEvery is how often the STATUS= line is refreshed.
const statusEvery = time.Second

// wedgeEnv names the test hook that lets systemd's watchdog be tested: with
// CGPOOL_TEST_WEDGE=SIGUSR2 in the daemon's environment, a SIGUSR2 stops
// serve's main loop for good. Only who sets the service's environment (the
// unit's author, root) can enable it, and only who may signal the daemon
// (root, or its own uid) can trigger it; without the variable SIGUSR2 is
// ignored, which is what the Go runtime does with it by default.
const wedgeEnv = "CGPOOL_TEST_WEDGE"

// newHeartbeat returns the heartbeat of sup; outside systemd (no
// NOTIFY_SOCKET) its channel never fires.
func newHeartbeat(sup *pool.Supervisor, log *slog.Logger) *heartbeat {
	h := &heartbeat{sup: sup, log: log}
	if os.Getenv(wedgeEnv) == "SIGUSR2" {
		h.wedge = make(chan os.Signal, 1)
		signal.Notify(h.wedge, syscall.SIGUSR2)
		log.Warn("test hook enabled: SIGUSR2 stops the main loop (systemd's watchdog then restarts the service)", "env", wedgeEnv)
	}
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return h
	}
	every := statusEvery
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog settings", "err", err)
	}
	if wd > 0 {
		h.watchdog = true
		every = min(every, wd/2) // systemd's advice: ping at half the interval
	}
	h.ticker = time.NewTicker(every)
	return h
}

// C fires when a beat is due.
func (h *heartbeat) C() <-chan time.Time {
	if h.ticker == nil {
		return nil
	}
	return h.ticker.C
}

// Wedged fires on the test hook's signal (never without the hook).
func (h *heartbeat) Wedged() <-chan os.Signal { return h.wedge }

// beat sends the status line if it changed, and the watchdog ping.
func (h *heartbeat) beat() {
	var msg []string
	if s := statusLine(h.sup); s != h.last {
		h.last = s
		msg = append(msg, "STATUS="+s)
	}
	if h.watchdog {
		msg = append(msg, daemon.SdNotifyWatchdog)
	}
	if len(msg) > 0 {
		if _, err := daemon.SdNotify(false, strings.Join(msg, "\n")); err != nil {
			h.log.Debug("sd_notify", "err", err)
		}
	}
}

// stopping tells systemd the service is stopping, and keeps pinging the
// watchdog while the shutdown runs (its bound is the unit's
// TimeoutStopSec=, not the watchdog's); the returned func stops that.
func (h *heartbeat) stopping() (done func()) {
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping+"\nSTATUS=stopping: cancelling queued tasks, letting running ones finish")
	if h.ticker == nil {
		return func() {}
	}
	h.ticker.Stop()
	if !h.watchdog {
		return func() {}
	}
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(statusEvery / 2)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
			}
		}
	}()
	return func() { close(quit); <-exited }
}

// statusLine is the STATUS= text: per pool, workers busy and idle and
// tasks queued, e.g. "default: 1 busy, 1 idle, 0 queued; py: 0 busy, 2
// idle, 0 queued".
func statusLine(sup *pool.Supervisor) string {
	var parts []string
	for _, name := range sup.Pools() {
		p, err := sup.Pool(name)
		if err != nil {
			continue
		}
		// Slots, not processes: an idle exec slot has no process.
		var busy, idle int
		for _, w := range p.Status().Workers {
			switch w.State {
			case "busy":
				busy++
			case "idle":
				idle++
			}
		}
		parts = append(parts, fmt.Sprintf("%s: %d busy, %d idle, %d queued", name, busy, idle, p.Stats().TasksQueued))
	}
	return strings.Join(parts, "; ")
}
