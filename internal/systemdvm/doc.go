// Package systemdvm holds the tests that prove cgpool under a real systemd:
// contrib/systemd's units installed in a Debian bookworm root (systemd
// 252) that scripts/systemd-vm-test.sh boots under qemu. They are built
// only with the systemdvm tag (go test -tags systemdvm -c) and run only
// there, as root, with cgpool at /usr/local/bin/cgpool and
// testdata/config/systemd.toml as /etc/cgpool.toml; anywhere else they
// refuse to run.
package systemdvm
