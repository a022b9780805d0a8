package cgroup

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The parsers read files a kernel writes, but cgpool also reads them from
// groups a task may own (a nested pool's, a slot a task was delegated), so
// they must never panic or loop on anything. Their seed corpus is the
// repository's recorded kernel files (testdata/cgroupfs, see its README),
// so the fuzzer starts from what real kernels write.

// seedFixtures adds every recorded kernel file whose name starts with one
// of prefixes to f's corpus, and fails if there is none.
func seedFixtures(f *testing.F, prefixes ...string) {
	f.Helper()
	ents, err := os.ReadDir(fixtures)
	if err != nil {
		f.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(e.Name(), p) }) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(fixtures, e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		n++
	}
	if n == 0 {
		f.Fatalf("no fixture in %s starts with %q", fixtures, prefixes)
	}
}

// FuzzParseFlatKeyed: memory.events, cgroup.events, cgroup.stat and the
// like. Whatever it accepts, written back one "key value" line per key,
// parses to the same map; the typed parsers agree with it.
func FuzzParseFlatKeyed(f *testing.F) {
	seedFixtures(f, "memory.events", "cgroup.events", "cgroup.stat", "cpu.stat")
	f.Add([]byte("populated 1\nfrozen 0"))            // no final newline
	f.Add([]byte("oom_kill  18446744073709551615\n")) // two spaces, the largest value
	f.Add([]byte("populated 10"))                     // found by CI's 10 s run: any non-zero is populated
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseFlatKeyed(string(data))
		if err != nil {
			return
		}
		var b bytes.Buffer
		for _, k := range slices.Sorted(maps.Keys(m)) {
			fmt.Fprintf(&b, "%s %d\n", k, m[k])
		}
		again, err := ParseFlatKeyed(b.String())
		if err != nil || !maps.Equal(m, again) {
			t.Fatalf("ParseFlatKeyed(%q) = %v; written back as %q it parses to %v, %v", data, m, b.String(), again, err)
		}
		me, err := ParseMemoryEvents(string(data))
		if err != nil || me.OOMKill != m["oom_kill"] || me.OOMGroupKill != m["oom_group_kill"] || me.Max != m["max"] {
			t.Fatalf("ParseMemoryEvents(%q) = %+v, %v; ParseFlatKeyed gave %v", data, me, err, m)
		}
		ev, err := ParseEvents(string(data))
		// The kernel writes 0 or 1; any other non-zero value is read as
		// populated, so that a group is never taken for empty by mistake.
		if err == nil && ev.Populated != (m["populated"] != 0) {
			t.Fatalf("ParseEvents(%q) = %+v; ParseFlatKeyed gave %v", data, ev, m)
		}
	})
}

// FuzzParseMountinfo: /proc/self/mountinfo. Every mount it returns has a
// mount point (the field cgpool turns into paths), and PickMount picks one
// of them.
func FuzzParseMountinfo(f *testing.F) {
	seedFixtures(f, "mountinfo")
	f.Fuzz(func(t *testing.T, data []byte) {
		ms, err := ParseMountinfo(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.Point == "" || m.Root == "" {
				t.Fatalf("ParseMountinfo(%q): mount %+v with an empty field", data, m)
			}
		}
		if m, err := PickMount(ms); (err == nil) != (len(ms) > 0) || (err == nil && !slices.Contains(ms, m)) {
			t.Fatalf("PickMount(%+v) = %+v, %v", ms, m, err)
		}
	})
}

// FuzzParseProcCgroup: /proc/<pid>/cgroup. A path it returns came from a
// "0::" line of the input.
func FuzzParseProcCgroup(f *testing.F) {
	seedFixtures(f, "proc-cgroup")
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseProcCgroup(bytes.NewReader(data))
		if err != nil {
			return
		}
		if !bytes.Contains(data, []byte("0::"+p)) {
			t.Fatalf("ParseProcCgroup(%q) = %q, which no 0:: line holds", data, p)
		}
	})
}

// FuzzParseIOStat: io.stat. It never panics, and when it accepts a file
// it accepts each of its lines alone.
func FuzzParseIOStat(f *testing.F) {
	seedFixtures(f, "io.stat")
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseIOStat(string(data))
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(data), "\n") {
			one, err := ParseIOStat(line)
			if err != nil {
				t.Fatalf("ParseIOStat(%q) = %+v but its line %q gives %+v, %v", data, s, line, one, err)
			}
		}
	})
}
