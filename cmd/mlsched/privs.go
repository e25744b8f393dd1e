package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// captureKeepCaps names the capabilities a capture still needs once its probes are attached,
// its output file is open and its command has started: only reading the ring buffer (mmap'ed
// already), reading the counter map, closing links and renaming the trace into place remain.
func captureKeepCaps(out string) map[uintptr]string {
	keep := map[uintptr]string{}
	// Before Linux 6.5, every bpf() command, map lookups included, needed CAP_BPF (or
	// CAP_SYS_ADMIN) while kernel.unprivileged_bpf_disabled is set; 6.5 moved that check to
	// map creation and program load. The capture reads its counter map until it ends.
	if !kernelAtLeast(6, 5) && sysctlInt("/proc/sys/kernel/unprivileged_bpf_disabled") != 0 {
		keep[unix.CAP_BPF] = "read the capture's counter map (bpf() map lookups need CAP_BPF before Linux 6.5)"
	}
	dir := filepath.Dir(out)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		// Unknown: keep what a rename in a directory of another user could need.
		st.Uid, st.Mode = ^uint32(0), unix.S_ISVTX
	}
	ownerWrites := int(st.Uid) == os.Geteuid() && st.Mode&0o200 != 0
	if !ownerWrites && st.Mode&0o002 == 0 {
		keep[unix.CAP_DAC_OVERRIDE] = "create and rename the trace in " + dir + ", a directory root does not own or cannot write"
	}
	if st.Mode&unix.S_ISVTX != 0 && int(st.Uid) != os.Geteuid() {
		keep[unix.CAP_FOWNER] = "rename the trace over a file another user owns in the sticky directory " + dir
	}
	// The rename looks the path up again: every directory above the trace must stay
	// searchable (a 0700 home of another user is not, without a capability).
	if _, ok := keep[unix.CAP_DAC_OVERRIDE]; !ok {
		if d := unsearchableParent(dir); d != "" {
			keep[unix.CAP_DAC_READ_SEARCH] = "look up the trace's path through " + d + ", a directory root can search only with it"
		}
	}
	return keep
}

// unsearchableParent is the first directory on dir's absolute path (dir included) that this
// process could not search without a capability, or "".
func unsearchableParent(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	groups, _ := os.Getgroups()
	for d := abs; ; d = filepath.Dir(d) {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err != nil {
			return d
		}
		switch {
		case int(st.Uid) == os.Geteuid():
			if st.Mode&0o100 == 0 {
				return d
			}
		case int(st.Gid) == os.Getegid() || slices.Contains(groups, int(st.Gid)):
			if st.Mode&0o010 == 0 {
				return d
			}
		case st.Mode&0o001 == 0:
			return d
		}
		if d == filepath.Dir(d) {
			return ""
		}
	}
}

// dropPrivileges keeps only the capabilities in keep, on every thread of the process (Go runs
// many, and capabilities are per thread): no_new_privs first, so that nothing started later
// regains any through a setuid binary or file capabilities; then the bounding set, the ambient
// set, and the effective, permitted and inheritable sets.
func dropPrivileges(keep map[uintptr]string) error {
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); e != 0 {
		if e == syscall.ENOTSUP {
			// Go refuses to change every thread's credentials in a binary linked with cgo.
			return fmt.Errorf("this binary was built with cgo, where Go cannot change the credentials of every thread: build it with CGO_ENABLED=0 (`make build` does)")
		}
		return fmt.Errorf("set no_new_privs: %w", e)
	}
	last := sysctlInt("/proc/sys/kernel/cap_last_cap")
	if last <= 0 {
		last = unix.CAP_LAST_CAP
	}
	var mask [2]uint32
	for c := uintptr(0); c <= uintptr(last); c++ {
		if _, ok := keep[c]; ok {
			mask[c/32] |= 1 << (c % 32)
			continue
		}
		if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0); e != 0 && e != syscall.EINVAL {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, e)
		}
	}
	if _, _, e := syscall.AllThreadsSyscall6(syscall.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); e != 0 && e != syscall.EINVAL {
		return fmt.Errorf("clear ambient capabilities: %w", e)
	}
	hdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := &[2]unix.CapUserData{
		{Effective: mask[0], Permitted: mask[0]},
		{Effective: mask[1], Permitted: mask[1]},
	}
	if _, _, e := syscall.AllThreadsSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}

// keptCapsDesc lists the kept capabilities and why, for the capture summary.
func keptCapsDesc(keep map[uintptr]string) string {
	if len(keep) == 0 {
		return "all capabilities dropped after attaching (no_new_privs set)"
	}
	var parts []string
	for _, c := range []struct {
		cap  uintptr
		name string
	}{{unix.CAP_BPF, "CAP_BPF"}, {unix.CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"}, {unix.CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"}, {unix.CAP_FOWNER, "CAP_FOWNER"}} {
		if why, ok := keep[c.cap]; ok {
			parts = append(parts, c.name+" to "+why)
		}
	}
	return "capabilities dropped after attaching except " + strings.Join(parts, "; ") + " (no_new_privs set)"
}

func sysctlInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// kernelAtLeast compares the running kernel's release with major.minor.
func kernelAtLeast(major, minor int) bool {
	var maj, min int
	fmt.Sscanf(kernelRelease(), "%d.%d", &maj, &min)
	return maj > major || maj == major && min >= minor
}
