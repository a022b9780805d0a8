package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cgpool/cgpool/cgroup"
	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

// errNoSystemd: the host does not run systemd (/run/systemd/system is
// not a directory), so no service manager can delegate a cgroup.
var errNoSystemd = errors.New("systemd is not the service manager here")

// scopeTimeout bounds the whole D-Bus exchange that makes a scope.
const scopeTimeout = 30 * time.Second

// systemdRunning reports whether systemd is the service manager, as
// sd_booted(3) tells: /run/systemd/system is a directory.
func systemdRunning() bool {
	st, err := os.Lstat("/run/systemd/system")
	return err == nil && st.IsDir()
}

// startScope asks systemd for a transient scope unit holding this process,
// with Delegate=yes, and returns the scope's cgroup directory (under the
// cgroup v2 mount), which is then ours to manage: the way rootless
// container tools get a cgroup (podman's RunUnderSystemdScope, crun's
// enter_systemd_cgroup_scope: StartTransientUnit with PIDs=[self] and
// Delegate=true). As root it asks the system manager (the system bus, or
// systemd's private socket without a bus daemon); as any other user it
// asks that user's own manager (the session bus at
// $XDG_RUNTIME_DIR/bus, which dbus-user-session provides, else the
// manager's private socket $XDG_RUNTIME_DIR/systemd/private). The unit is
// cgpool-<pid>.scope; systemd stops and removes it once it is empty
// (CollectMode=inactive-or-failed: a failed one too). It blocks until the
// job is done, the process has moved, or ctx (bounded by 30 s) ends.
func startScope(ctx context.Context, log *slog.Logger) (string, error) {
	if !systemdRunning() {
		return "", errNoSystemd
	}
	ctx, cancel := context.WithTimeout(ctx, scopeTimeout)
	defer cancel()
	conn, manager, err := managerConn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	name := "cgpool-" + strconv.Itoa(os.Getpid()) + ".scope"
	props := []sddbus.Property{
		sddbus.PropDescription("cgpool supervisor (pid " + strconv.Itoa(os.Getpid()) + ") and its worker slots"),
		sddbus.PropPids(uint32(os.Getpid())),
		{Name: "Delegate", Value: dbus.MakeVariant(true)},
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
		// cgpool classifies OOM kills itself and keeps serving: one
		// OOM-killed task must not stop the scope (systemd's default
		// OOMPolicy=stop for units without Delegate=; runc sets it too).
		{Name: "OOMPolicy", Value: dbus.MakeVariant("continue")},
	}
	// Buffered, and always read: an undrained job channel blocks the
	// connection's job handling (coreos/go-systemd#429).
	done := make(chan string, 1)
	if _, err := conn.StartTransientUnitContext(ctx, name, "fail", props, done); err != nil {
		return "", fmt.Errorf("ask the %s for a transient scope %s with Delegate=yes: %w", manager, name, err)
	}
	select {
	case res := <-done:
		if res != "done" {
			return "", fmt.Errorf("the %s's job for the transient scope %s ended %q", manager, name, res)
		}
	case <-ctx.Done():
		return "", fmt.Errorf("the %s did not start the transient scope %s: %w", manager, name, ctx.Err())
	}
	self, err := cgroup.SelfPath()
	if err != nil {
		return "", err
	}
	if filepath.Base(self) != name {
		return "", fmt.Errorf("the %s started %s, but this process is in %s", manager, name, self)
	}
	m, err := cgroup.FindMount()
	if err != nil {
		return "", err
	}
	dir := m.HostPath(self)
	if log != nil {
		log.Info("running in a transient scope with Delegate=yes", "manager", manager, "unit", name, "cgroup", dir)
	}
	return dir, nil
}

// managerConn connects to the service manager that may delegate to us.
func managerConn(ctx context.Context) (*sddbus.Conn, string, error) {
	if os.Geteuid() == 0 {
		conn, err := sddbus.NewWithContext(ctx) // the system bus; systemd's private socket without one
		if err != nil {
			return nil, "", fmt.Errorf("connect to the system manager over D-Bus: %w", err)
		}
		return conn, "system manager", nil
	}
	manager := "user manager of uid " + strconv.Itoa(os.Getuid())
	conn, err := sddbus.NewUserConnectionContext(ctx)
	if err == nil {
		return conn, manager, nil
	}
	rt := os.Getenv("XDG_RUNTIME_DIR")
	if rt == "" {
		rt = "/run/user/" + strconv.Itoa(os.Getuid())
	}
	priv := filepath.Join(rt, "systemd", "private")
	conn, perr := sddbus.NewConnection(func() (*dbus.Conn, error) {
		// The manager's own socket speaks D-Bus without a bus daemon:
		// EXTERNAL auth by uid, no Hello (as go-systemd's
		// NewSystemdConnectionContext does for the system manager).
		c, err := dbus.Dial("unix:path="+priv, dbus.WithContext(ctx))
		if err != nil {
			return nil, err
		}
		if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	})
	if perr != nil {
		return nil, "", fmt.Errorf("connect to the %s: session bus: %v; %s: %w (is user@%d.service running? loginctl enable-linger starts it without a login)",
			manager, err, priv, perr, os.Getuid())
	}
	return conn, manager, nil
}

// systemdDelegated reports whether systemd delegated dir, this process's
// unit cgroup, to it: the trusted.delegate (system manager) or
// user.delegate (user manager) extended attribute systemd sets on a
// delegated unit's cgroup, else (a systemd too old to set them) the
// unit's Delegate property, asked over D-Bus. On a systemd host a cgroup
// root may write is not delegated for that alone: a group made inside a
// unit that systemd manages itself breaks its single-writer rule.
func systemdDelegated(ctx context.Context, dir string) bool {
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		buf := make([]byte, 8)
		if n, err := unix.Getxattr(dir, attr, buf); err == nil && strings.TrimSpace(string(buf[:n])) == "1" {
			return true
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, _, err := managerConn(ctx)
	if err != nil {
		return false
	}
	defer conn.Close()
	unitName, err := conn.GetUnitNameByPID(ctx, uint32(os.Getpid()))
	if err != nil {
		return false
	}
	var typ string
	switch {
	case strings.HasSuffix(unitName, ".service"):
		typ = "Service"
	case strings.HasSuffix(unitName, ".scope"):
		typ = "Scope"
	default:
		return false
	}
	p, err := conn.GetUnitTypePropertyContext(ctx, unitName, typ, "Delegate")
	if err != nil {
		return false
	}
	v, ok := p.Value.Value().(bool)
	return ok && v
}
