package check

import (
	"encoding/hex"
	"strings"
	"testing"
)

// TestPyPayload: the Python rows' call, as Python's own pickle.loads reads
// it: (cgpool_check_tasks.run, ("cgroup_escape", True), {}). The bytes were
// checked once with python3 3.11 and are pinned here.
func TestPyPayload(t *testing.T) {
	const want = "8002636367706f6f6c5f636865636b5f7461736b730a72756e0a580d0000006367726f75705f65736361706588867d872e"
	if got := hex.EncodeToString(pyPayload("cgroup_escape", true)); got != want {
		t.Errorf("pyPayload(cgroup_escape, true) = %s, want %s", got, want)
	}
	if got := pyPayload("cpu", false); got[len(got)-5] != 0x89 {
		t.Errorf("pyPayload(cpu, false) does not end in NEWFALSE: %x", got)
	}
}

// TestUnpickle: results as python3's pickle.dumps writes them, at protocol
// 2 and 5 (the worker's, with its FRAME opcode).
func TestUnpickle(t *testing.T) {
	long := strings.Repeat("x", 300)
	for _, tc := range []struct{ hex, want string }{
		{"80024b0a2e", "10"},
		{"80054b0a2e", "10"},
		{"80024d2c012e", "300"},
		{"80059504000000000000004d2c012e", "300"},
		{"800258260000006573636170656420746f202f7379732f66732f6367726f75702f6367726f75702e70726f637371002e", "escaped to /sys/fs/cgroup/cgroup.procs"},
		{"8005952a000000000000008c266573636170656420746f202f7379732f66732f6367726f75702f6367726f75702e70726f6373942e", "escaped to /sys/fs/cgroup/cgroup.procs"},
		{"8005953301000000000000582c010000" + hex.EncodeToString([]byte(long)) + "942e", long},
		{"80054e2e", `"\x80\x05N."`}, // None: not a result a row gives; shown as bytes
		{"", `""`},
	} {
		b, _ := hex.DecodeString(tc.hex)
		if got := unpickle(b); got != tc.want {
			t.Errorf("unpickle(%s) = %q, want %q", tc.hex, got, tc.want)
		}
	}
}

// TestRowsHaveForms: every row runs somewhere, and has an exec form where
// it runs in the exec column.
func TestRowsHaveForms(t *testing.T) {
	for _, r := range rows {
		if !r.exec && !r.goW && !r.py {
			t.Errorf("row %s runs in no column", r.name)
		}
		if r.exec {
			for _, stuck := range []bool{false, true} {
				if argv := execArgv(r.name, stuck, []string{"cgpool"}); len(argv) == 0 {
					t.Errorf("row %s: no exec argv", r.name)
				}
			}
		}
	}
}
