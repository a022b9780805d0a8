package pool

import (
	"fmt"
	"slices"
	"strings"
)

// deniedEnv lists the variables that SetEnv refuses unless the pool's
// AllowEnv names them: the dynamic loader's (LD_*) and the others that
// glibc strips from the environment of a setuid program because they make
// it load or read files of the caller's choosing (glibc
// sysdeps/generic/unsecvars.h). The pool environment reaches every task of
// every client; one admin's mistake must not become code in all of them.
var deniedEnv = []string{"GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "MALLOC_TRACE",
	"NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR"}

// envDenied reports whether SetEnv refuses the name under this pool's
// AllowEnv ("*" allows every name).
func (c *Config) envDenied(name string) bool {
	if slices.Contains(c.AllowEnv, name) || slices.Contains(c.AllowEnv, "*") {
		return false
	}
	return strings.HasPrefix(name, "LD_") || slices.Contains(deniedEnv, name)
}

// checkEnv returns an error naming the first denied variable of env.
func (c *Config) checkEnv(env map[string]string) error {
	var bad []string
	for k := range env {
		if c.envDenied(k) {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return fmt.Errorf("pool %s: %s may not be set in the pool environment (the dynamic loader's variables and glibc's unsafe ones are refused there); list them in the pool's allow_env to allow them",
		c.Name, strings.Join(bad, ", "))
}
