// Package deptest holds the test that keeps the import arrows of
// DESIGN.md honest: each package may import only the cgpool packages below
// it in the layout table, and go-systemd is imported by cmd/cgpool alone.
// It has no code; the test runs on the host (it needs the go command), not
// in the VM (build tag vm).
package deptest
