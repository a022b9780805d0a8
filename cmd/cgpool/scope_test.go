package main

import (
	"context"
	"errors"
	"os"
	"testing"
)

// TestStartScopeWithoutSystemd: on a host whose service manager is not
// systemd, no D-Bus is tried and the error says why (the scope itself is
// tested under a real systemd in internal/systemdvm).
func TestStartScopeWithoutSystemd(t *testing.T) {
	if st, err := os.Lstat("/run/systemd/system"); err == nil && st.IsDir() {
		t.Skip("systemd runs here: the transient scope is tested in the systemd VM (internal/systemdvm)")
	}
	if systemdRunning() {
		t.Fatal("SystemdRunning() = true without /run/systemd/system")
	}
	if _, err := startScope(context.Background(), nil); !errors.Is(err, errNoSystemd) {
		t.Fatalf("startScope: %v, want ErrNoSystemd", err)
	}
}
