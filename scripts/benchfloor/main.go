// Command benchfloor runs N commands, P at a time, the cheapest way the
// kernel allows each to get a cgroup of its own: mkdir a fresh leaf, open
// it O_PATH, start the command into it with CLONE_INTO_CGROUP (Go's
// SysProcAttr.UseCgroupFD), wait for it, rmdir the leaf. That is the floor
// under cgpool run, which does that and more (timeouts, kills, output,
// bookkeeping); scripts/bench-run.sh times both beside xargs -P and GNU
// parallel. -plain starts the commands with os/exec alone (no cgroup).
//
//	benchfloor [-plain] [-P 2] N COMMAND [ARG...]
//
// It needs a writable cgroup v2 hierarchy (root, or a delegated cgroup),
// makes its groups in benchfloor-<pid> at the top of it and removes them.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	plain := flag.Bool("plain", false, "no cgroup: os/exec alone")
	par := flag.Int("P", 2, "commands at once")
	flag.Parse()
	if flag.NArg() < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchfloor [-plain] [-P 2] N COMMAND [ARG...]")
		os.Exit(2)
	}
	n, err := strconv.Atoi(flag.Arg(0))
	if err != nil || n < 1 {
		fmt.Fprintln(os.Stderr, "benchfloor: N must be a count")
		os.Exit(2)
	}
	argv := flag.Args()[1:]
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchfloor:", err)
		os.Exit(1)
	}
	root := ""
	if !*plain {
		mnt, err := cgroup2Mount()
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchfloor:", err)
			os.Exit(1)
		}
		root = filepath.Join(mnt, "benchfloor-"+strconv.Itoa(os.Getpid()))
		if err := os.Mkdir(root, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "benchfloor:", err)
			os.Exit(1)
		}
		defer os.Remove(root)
	}
	jobs := make(chan int)
	var wg sync.WaitGroup
	var failed sync.Once
	var firstErr error
	for w := 0; w < *par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := runOne(path, argv, root, i); err != nil {
					failed.Do(func() { firstErr = err })
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		fmt.Fprintln(os.Stderr, "benchfloor:", firstErr)
		os.Exit(1)
	}
}

// runOne runs the command once, in a fresh leaf below root ("" = none).
func runOne(path string, argv []string, root string, i int) error {
	cmd := exec.Command(path, argv[1:]...)
	cmd.Args = argv
	if root == "" {
		return cmd.Run()
	}
	leaf := filepath.Join(root, "c-"+strconv.Itoa(i))
	if err := unix.Mkdir(leaf, 0o755); err != nil {
		return &os.PathError{Op: "mkdir", Path: leaf, Err: err}
	}
	defer unix.Rmdir(leaf)
	fd, err := unix.Open(leaf, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: leaf, Err: err}
	}
	defer unix.Close(fd)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	return cmd.Run()
}

// cgroup2Mount finds the cgroup v2 mount (/sys/fs/cgroup, or
// /sys/fs/cgroup/unified on a hybrid host).
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for j, x := range fields {
			if x == "-" && j+1 < len(fields) && fields[j+1] == "cgroup2" {
				return fields[4], nil
			}
		}
	}
	return "", fmt.Errorf("no cgroup2 mount in /proc/self/mountinfo")
}
