package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzConfig: whatever a configuration file holds, TOML or JSON, reading it
// and turning its pools into pool.Configs ends in a config or an error,
// never a panic, and a size that parses is never negative (an overflow
// such as 9223372036854775807K once wrapped). Seeds: the example configs
// and the top-level testdata/fuzz/FuzzConfig.
func FuzzConfig(f *testing.F) {
	f.Add([]byte("socket = \"/run/x.sock\"\n[[pools]]\nname = \"a\"\nmax_workers = 2\nmemory_max = \"64M\"\n"), false)
	f.Add([]byte(`{"pools":[{"name":"py","kind":"worker","command":["python3"],"max_workers":1,"memory_max":123,"idle_delay":"1s"}]}`), true)
	f.Add([]byte("[[pools]]\nname = \"a\"\nmax_workers = 1\nmax_queued_bytes = \"9223372036854775807K\"\n"), false)
	for _, dir := range []string{filepath.Join("..", "..", "testdata", "fuzz", "FuzzConfig"), filepath.Join("..", "..", "testdata", "config")} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
				f.Add(b, strings.HasSuffix(e.Name(), ".json"))
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, isJSON bool) {
		name := "fuzz.toml"
		if isJSON {
			name = "fuzz.json"
		}
		c, err := parseConfig(name, b)
		if err != nil {
			return
		}
		for _, pc := range c.Pools {
			pcfg, err := pc.toPool()
			if err != nil {
				continue
			}
			for _, n := range []int64{pcfg.MemoryMax, pcfg.MemoryHigh, pcfg.MaxWorkerMemoryBytes, pcfg.TrimThresholdBytes, pcfg.OutputLimit,
				pcfg.MaxEnvBytes, pcfg.MaxArgvBytes, pcfg.MaxPayloadBytes, pcfg.MaxQueuedBytes} {
				if n < 0 {
					t.Fatalf("a size parsed to %d", n)
				}
			}
			if pcfg.DefaultTimeout < 0 || pcfg.MaxTimeout < 0 || pcfg.IdleDelay < 0 {
				t.Fatalf("a duration parsed negative: %+v", pcfg)
			}
		}
	})
}
