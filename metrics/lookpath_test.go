package metrics

import (
	"fmt"
	"os"
	"path/filepath"
)

// lookPath finds a program in the usual places (the VM has no PATH beyond
// /bin, /sbin and /usr/bin).
func lookPath(name string) (string, error) {
	for _, dir := range []string{"/bin", "/usr/bin", "/sbin", "/usr/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in /bin, /usr/bin, /sbin or /usr/sbin", name)
}
