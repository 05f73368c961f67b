package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// dropPrivileges makes the running appliance unprivileged once its TAP
// devices are open and configured and its sockets bound: no process
// capability and nothing it could regain.
//
// Nothing it does afterwards needs one. Forwarding, ARP/NDP, ICMP, the
// health checks (TCP, HTTP and ICMP probes all go through the userspace
// netstack, not the host's sockets) and the announcements run on the
// already-open TAP file descriptors; a reload changes only netstack state
// (routes, neighbors, clusters) and re-reads the configuration file, which
// the user must be able to read. A reload that would need more, that is,
// one that changes interfaces (new TAP devices) or names a key file the
// user cannot read, is rejected with a message and the running
// configuration stays; those take a restart.
//
// Started as root with a non-root uid: no supplementary groups, then the
// gid and the uid (real, effective and saved: Go applies these to every
// thread of the process, through libc when cgo is linked). Leaving uid 0
// clears the permitted, effective and ambient capability sets of every
// thread (capabilities(7)); the check below reads them back. With uid 0
// (user = "root") nothing changes. no_new_privs is not set here: prctl
// applies to the calling thread only, and Go offers no way to run it on
// every thread when cgo is linked; the appliance executes nothing, and a
// service manager can set it for the whole process (systemd's
// NoNewPrivileges=).
func dropPrivileges(uid, gid int) error {
	if os.Geteuid() != 0 || uid == 0 {
		return nil
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("dropping privileges: setgroups: %w", err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("dropping privileges: setresgid %d: %w", gid, err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("dropping privileges: setresuid %d: %w", uid, err)
	}
	caps, err := effectiveCaps()
	if err != nil {
		return err
	}
	if caps != 0 {
		return fmt.Errorf("dropping privileges: capabilities %#x left after setresuid", caps)
	}
	return nil
}

// effectiveCaps is the process's CapEff from /proc/self/status (every
// thread's is checked: the Go runtime has several).
func effectiveCaps() (uint64, error) {
	var all uint64
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, fmt.Errorf("reading capabilities: %w", err)
	}
	for _, t := range tasks {
		f, err := os.Open("/proc/self/task/" + t.Name() + "/status")
		if err != nil {
			continue // the thread exited
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
				var c uint64
				fmt.Sscanf(strings.TrimSpace(v), "%x", &c)
				all |= c
			}
		}
		f.Close()
	}
	return all, nil
}
