package cgroup

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// MountInfo is one cgroup2 line of /proc/<pid>/mountinfo.
type MountInfo struct {
	// Root is the path inside the hierarchy that is mounted (field 4), "/"
	// unless the mount was made inside a cgroup namespace or bind-mounted.
	Root string
	// Point is where it is mounted (field 5), e.g. /sys/fs/cgroup.
	Point string
}

// ParseMountinfo returns the cgroup2 mounts listed in a mountinfo file, in
// file order. It does not block beyond reading r; it returns an error only
// when r fails or a line is malformed.
func ParseMountinfo(r io.Reader) ([]MountInfo, error) {
	var out []MountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			return nil, fmt.Errorf("mountinfo: no separator in %q", line)
		}
		if f := strings.Fields(post); len(f) == 0 || f[0] != "cgroup2" {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 {
			return nil, fmt.Errorf("mountinfo: short line %q", line)
		}
		out = append(out, MountInfo{Root: unescapeOctal(f[3]), Point: unescapeOctal(f[4])})
	}
	return out, sc.Err()
}

// PickMount chooses the cgroup v2 mount cgpool uses: /sys/fs/cgroup on a
// pure v2 host, /sys/fs/cgroup/unified on a hybrid one, else the first.
func PickMount(ms []MountInfo) (MountInfo, error) {
	if len(ms) == 0 {
		return MountInfo{}, ErrNoCgroup2
	}
	for _, want := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		for _, m := range ms {
			if m.Point == want {
				return m, nil
			}
		}
	}
	return ms[0], nil
}

// ParseProcCgroup returns the cgroup v2 path ("0::" line) of a
// /proc/<pid>/cgroup file, e.g. "/system.slice/cgpool.service".
func ParseProcCgroup(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return strings.TrimSuffix(p, " (deleted)"), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no cgroup v2 line: %w", ErrNoCgroup2)
}

// HostPath turns a path inside the hierarchy (as /proc/self/cgroup shows
// it) into a directory under the mount m.
func (m MountInfo) HostPath(cgPath string) string {
	rel := cgPath
	if m.Root != "/" {
		if r, ok := strings.CutPrefix(cgPath, m.Root); ok {
			rel = r
		}
	}
	return path.Join(m.Point, rel)
}

// unescapeOctal undoes mountinfo's \040-style escaping.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			o := s[i+1 : i+4]
			if o[0] >= '0' && o[0] <= '3' && o[1] >= '0' && o[1] <= '7' && o[2] >= '0' && o[2] <= '7' {
				b.WriteByte((o[0]-'0')<<6 | (o[1]-'0')<<3 | (o[2] - '0'))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
